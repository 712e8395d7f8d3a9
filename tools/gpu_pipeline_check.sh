#!/usr/bin/env bash
# The end-to-end GPU measurements of docs/speed.md ("End to end on a GPU") in one call, for a lent
# accelerator (about 5 minutes on an H100): the writer's CPU cost per photo, then seg and normal
# 0.4B folders of 64 and 256 photos through `sapiens2 predict`'s pipeline with its default
# settings. Results go to $OUT (default gpu_pipeline/), one JSON per run plus the printed tables.
#
#   bash tools/gpu_pipeline_check.sh                      # on the GPU machine, from the repo root
#   DEVICE=cpu ARCH=sapiens2_tiny RES=128x96 IMAGES="4" BATCH=2 REPEATS=1 \
#       bash tools/gpu_pipeline_check.sh                  # a dry run of the script on a CPU
set -euo pipefail
OUT=${OUT:-gpu_pipeline}
DEVICE=${DEVICE:-cuda}
ARCH=${ARCH:-sapiens2_0.4b}
RES=${RES:-1024x768}
IMAGES=${IMAGES:-"64 256"}
BATCH=${BATCH:-8}
REPEATS=${REPEATS:-3}
DTYPE=${DTYPE:-bf16}
mkdir -p "$OUT"
python benchmarks/render.py --frames 8 --repeats 3 --json "$OUT/render.json" | tee "$OUT/render.txt"
for task in seg normal; do
    for n in $IMAGES; do
        python benchmarks/pipeline.py --device "$DEVICE" --dtype "$DTYPE" --arch "$ARCH" \
            --res "$RES" --task "$task" --images "$n" --batch-size "$BATCH" \
            --repeats "$REPEATS" --people --json "$OUT/${task}_${n}.json" | tee "$OUT/${task}_${n}.txt"
    done
done
