#!/usr/bin/env bash
# The device check of issue 6: attreval bench on one CUDA GPU for torchvision ResNet18 (random weights) at 2×2
# grids of 224-px cells, and for the two embedded default models. Run from the repository root:
#   OUT=bench_out bash benchmarks/gpu_bench.sh
# Budget: about 9 minutes on an H100. The ResNet18 reference run uses 2 grids (the paper's pattern batches
# 8; with 2 grids its gradient and CAM passes carry 2 inputs, which makes the reference slower than the
# authors' on a GPU: read its speed-ups as upper bounds, the default models' 8-grid runs as exact).
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-bench_out}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
timeout 200 python3 -m attreval bench --model resnet18 --num-classes 1000 --cell 224 --grids 8 --device cuda \
  --chunk-size 64 --no-reference --out "$OUT/resnet18" | tail -n 8
timeout 200 python3 -m attreval bench --model resnet18 --num-classes 1000 --cell 224 --grids 2 --device cuda \
  --chunk-size 64 --out "$OUT/resnet18_ref" | tail -n 8
timeout 60 python3 -m attreval bench --model fashion_vgg --grids 8 --device cuda --chunk-size 256 --out "$OUT/fashion_vgg" | tail -n 8
timeout 60 python3 -m attreval bench --model fashion_resnet --grids 8 --device cuda --chunk-size 256 --out "$OUT/fashion_resnet" | tail -n 8
ls -R "$OUT"
