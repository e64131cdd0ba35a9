#!/usr/bin/env bash
# The main job on a fresh machine: install, generate ZSI-Shapes, train, evaluate (ZSI and GZSI).
# Override the training length with STEPS=N (default: the config's 1000 steps).
set -euo pipefail
cd "$(dirname "$0")"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
pip install -q -r requirements.txt -e .
DATA=data/generated/zsi_shapes
WORKDIR=${WORKDIR:-runs/shapes}
[ -f "$DATA/split.json" ] || python data_prep/make_shapes.py --out "$DATA"
python train.py --config configs/shapes.py --workdir "$WORKDIR" \
  --config.data.root="$DATA" ${STEPS:+--config.total_steps="$STEPS"}
# A few pictures of unseen-class predictions (ZSI test images, unseen classes only).
python predict.py --workdir "$WORKDIR" --dataset_split test_zsi --num_images 8 --classes unseen \
  --out "$WORKDIR/pictures" --grid "$WORKDIR/pictures/grid.png"
python eval.py --workdir "$WORKDIR" --split zsi,gzsi
