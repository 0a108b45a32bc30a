#!/usr/bin/env bash
# Train one stage of the embedded model on a lent GPU machine and pack what must come back.
#
#   bash scripts/device_train.sh vae --minutes 8.2                 # → $OUT/vae.tar
#   bash scripts/device_train.sh dit --vae runs/vae/vae --minutes 8 --compile   # → $OUT/pipeline.tar.part-*
#
# The machine has PyTorch but not diffusers: the wheels carried in .whl/ are installed first (diffusers alone
# when the machine's Hugging Face libraries suit it, else the whole carried set). Files that come back are
# limited to 16 MiB each, so the pipeline folder comes back as a tar split into 15 MB parts
# (`cat pipeline.tar.part-* | tar x` joins them).
set -euo pipefail
stage=$1
shift
source scripts/device_setup.sh
out=runs/$stage
python3 -m kvlock.world.training.train "$stage" --out "$out" "$@"
if [ "$stage" = vae ]; then
  tar cf "$OUT/vae.tar" -C "$out" vae vae_eval.json log.jsonl
else
  tar cf - -C "$out" pipeline log.jsonl | split -b 15000000 - "$OUT/pipeline.tar.part-"
fi
ls -la "$OUT"
