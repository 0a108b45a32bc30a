#!/usr/bin/env bash
# The few-step results on one lent GPU: distil the 4-step CFG-free LoRA of the embedded model, fit τ in the
# control's regime at 50 steps (the shipped model) and at 4 (the distilled one), then the quality benchmark's
# runs: the control's windows at 4 steps (calibration split) and the test split at 4 and at 50 steps.
#
#   bash bench/few_step.sh [MINUTES] [OUT] [CASES] [FIT]   # MINUTES of distillation (default 3); results into
#                                                         # OUT; CASES test cases (48); FIT clips per τ fit (16)
#
# The 50-step line (τ fit, then the test split) runs beside the 4-step line on the same GPU (the models are
# small), so the seconds per edit it reports are not the edits' own; the quality figures are unaffected.
# The τ fits are written into the distilled copy only (the shipped model's is printed, --dry-run).
set -euo pipefail
minutes=${1:-3}
out=${2:-${OUT:-runs/few-step}}
cases=${3:-48}
fit=${4:-16}
mkdir -p "$out" runs
[ -n "${OUT:-}" ] && source scripts/device_setup.sh
kvlock() { python3 -c 'import sys; from kvlock_cli.main import main; sys.exit(main())' "$@"; }
quality() { python3 bench/quality.py --device cuda --workers 7 "$@"; }
began=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - began )) s)"; }
fifty() {  # τ for the shipped model at 50 steps in the control's regime, then KV-Lock against its defaults
  kvlock calibrate --model tiny --steps 50 --cases "$fit" --device cuda --dry-run > "$out/calibrate-50.txt" 2>&1
  tau=$(grep -o 'τ = [0-9.e-]*' "$out/calibrate-50.txt" | tail -1 | cut -d' ' -f3)
  echo "{\"tau\": $tau}" > runs/tau-50.json  # the model's schedule otherwise (no lock, strength 0.8)
  quality --model tiny --split test --cases "$cases" --steps 50 --methods defaults kvlock --defaults runs/tau-50.json \
    --json "$out/q-50-test.json" > runs/q-50-test.txt 2>&1
}
fifty &
line50=$!
python3 -m kvlock.world.training.distill --out runs/distill --minutes "$minutes" --fresh | grep -v '"loss"' || true
cp -r runs/distill/lora "$out/" && cp runs/distill/log.jsonl "$out/distill_log.jsonl"
stamp distilled
kvlock calibrate --model runs/distill/merged --steps 4 --cases "$fit" --device cuda > "$out/calibrate-4.txt" 2>&1
grep -o "τ = [^ ]*" "$out/calibrate-4.txt" | tail -1
stamp "4-step τ"
quality --model runs/distill/merged --split test --cases "$cases" --steps 4 --methods defaults kvlock "strength 1" \
  --json "$out/q-4step-test.json" | tail -n 24
stamp "4-step test"
quality --model runs/distill/merged --split calibration --cases 24 --steps 4 \
  --methods "W = 2, κ = 3" "W = 2, κ = 4" "W = 3, κ = 4" "no lock" --json "$out/q-4step-calibration.json" | tail -n 24
stamp "4-step windows"
wait "$line50"
tail -n 3 "$out/calibrate-50.txt"
tail -n 24 runs/q-50-test.txt
stamp done
