#!/usr/bin/env bash
# The issue-6 GPU check, as one prepared script for a lent GPU machine (the device tool):
# installs the requirements, runs the quick bench on CUDA and the MiniLM fine-tuning throughput,
# and leaves everything under $OUT (or ./gpu-check when OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 METANLP_RUNS_DIR="$OUT/runs"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/device.txt"
for batch in 64 256; do
  python3 benchmarks/bench_finetune_throughput.py --device cuda --batch-size "$batch" --seq-len 128 \
    --json "$OUT/throughput_b${batch}.json" | tee -a "$OUT/log.txt"
done
python3 -m metanlp bench --quick --device cuda --no-progress --report "$OUT/results_gpu.md" 2>&1 | tee -a "$OUT/log.txt"
