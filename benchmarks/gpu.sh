#!/usr/bin/env bash
# The GPU checks and timings in one run (what the README's "GPU" figures come from):
# the CUDA tests, image-encoder throughput by batch size (GPU fp16 beside CPU fp32), and
# ingestion with the encoder on the GPU and 1, 2, 4 or 8 decoder processes.
#   usage: benchmarks/gpu.sh [OUTDIR]     (default benchmarks/results)
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu-nvidia-smi.txt"
$py -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu-pytest.txt"
$py benchmarks/encode.py --model ViT-B-32 --devices cuda,cpu --json "$out/encode-gpu.json" 2>&1 | grep -v "No pretrained weights"
$py benchmarks/ingest.py --device cuda --workers 1,2,4,8 --models vit-b-32 --backends pyav \
  --videos 8 --seconds 60 --wait-quiet 0 --retries 0 --no-real-clip --media-dir "${TMPDIR:-/tmp}/mmsearch-gpu-media" \
  --json "$out/ingest-gpu.json" 2>&1 | grep -v "No pretrained weights" | tail -25
# exact search with torch on the GPU (fp16, blocks, top-k on the device) beside FAISS flat on the CPU (issue #17)
$py benchmarks/gpu_search.py --sizes 1000000,10000000 --batches 1,64,1024 --json "$out/gpu_search.json" 2>&1 | tail -12
