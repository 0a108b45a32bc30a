"""How edits run on the hardware: attention backends, compilation and memory plans (``acceleration``), where
weights live (``residency``), one edit over a process group (``sequence_parallel``), and compiling every
pass kind before the first edit (``warm_up``)."""
