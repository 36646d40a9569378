#!/usr/bin/env bash
# The prepared accelerator check of issues 8 and 15: `harness bench` on a lent GPU machine, written as a
# reference file named after the GPU (reports/bench/<gpu>-<precision>.md and .json).
#
# That machine has python3 with torch, transformers, tokenizers, safetensors, peft, typer, tqdm,
# pillow and numpy, but no network and no pydantic or faiss. Fetch those here first (`make
# device-wheels` puts them in .whl/, which git ignores), then, through the device tool:
#
#   run(command="bash benchmarks/device_bench.sh", carry=[".whl"], timeout_s=540)
#
# Everything lands in $OUT (the tool brings it back): the bench files, its log and nvidia-smi's
# view of the card. Here, on a CPU, `OUT=/tmp/x bash benchmarks/device_bench.sh --quick` checks
# the script itself in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/bench}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"; } \
  | tee "$OUT/device.txt"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
set -o pipefail
"$PYTHON" -m harness bench --retrieval --out "$OUT" --quiet "$@" 2>&1 | tee "$OUT/bench.log"
# issue 15: one CIR-LVLM run from a tiny bf16 Qwen2.5-VL stand-in on the GPU (plain, checkpointing,
# checkpointing + micro-batches), with the step's peak CUDA memory beside harness plan's estimate
if "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  "$PYTHON" benchmarks/device_lvlm_check.py --out "$OUT" 2>&1 | tee "$OUT/lvlm_check.log"
else
  echo "no CUDA: the CIR-LVLM check runs on a GPU only (on a CPU: benchmarks/device_lvlm_check.py --device cpu)"
fi
