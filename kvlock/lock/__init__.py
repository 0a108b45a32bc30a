"""KV-Lock's maths as small pure modules: the token mask, the K/V bank and its fusion, the hallucination
metric, the α and ω schedules, CFG-Zero*, and the clip's noise field."""
