#!/usr/bin/env bash
# Regenerates the README/docs pictures with the CLI and the bundled demo models.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python - "$tmp" <<'PY'
import sys, cv2
from sapiens2.demo import synthetic_scene
scene = synthetic_scene(seed=3)
cv2.imwrite(f"{sys.argv[1]}/scene.png", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
PY
models=$(python -c "import sapiens2.demo as d, os; print(os.path.dirname(d.demo_model_path('seg')))")
sapiens2 predict --task seg --model "$models/seg.safetensors" --input-size 256 192 --out "$tmp/seg" "$tmp/scene.png"
sapiens2 predict --task pose --model "$models/pose.safetensors" --input-size 256 192 \
  --mask-model "$models/seg.safetensors" --out "$tmp/pose" "$tmp/scene.png"
for task in normal albedo; do
  sapiens2 predict --task $task --model "$models/$task.safetensors" --input-size 256 192 \
    --mask-dir "$tmp/seg" --out "$tmp/$task" "$tmp/scene.png"
done
sapiens2 predict --task pointmap --model "$models/pointmap.safetensors" --mask-dir "$tmp/seg" \
  --out "$tmp/pointmap" "$tmp/scene.png"
mkdir -p docs/images
for task in seg pose normal pointmap albedo; do
  python -c "import cv2,sys; cv2.imwrite(sys.argv[2], cv2.imread(sys.argv[1]))" "$tmp/$task/scene.jpg" "docs/images/predict_$task.png"
done
sapiens2 demo --out "$tmp/demo" --seed 0
cp "$tmp/demo/contact_sheet.png" docs/images/demo_contact_sheet.png
rm -rf "$tmp"
