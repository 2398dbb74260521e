#!/usr/bin/env bash
# Flushing CPU denormals (convexp/precision.py) on this CPU: the same train-mnist run (full MNIST,
# Adam with an L2 weight decay of 1e-3, cosine schedule, batch 16) with float32 denormals flushed
# to zero and with IEEE's gradual underflow, one after the other. Prints each epoch's training
# seconds and the accuracies. Without flushing, the epochs slow down one after another: the run
# produces values below 1.2e-38, where x86 takes its slow path.
#
#   CONVEXP_DATA=../shared/data bash benchmarks/denormals.sh [EPOCHS]
#
# Run it on an otherwise idle machine: the seconds are the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-3}
DATA=${CONVEXP_DATA:?set CONVEXP_DATA to the folder holding mnist/ (e.g. ../shared/data)}
BIN=${BIN:-.venv/bin}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

lscpu | grep -E "Model name|^CPU\(s\)"
echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
uptime
for flush in 1 0; do  # CONVEXP_FLUSH_DENORMALS: 1 is convexp's default, 0 is IEEE (PyTorch's default)
  CONVEXP_FLUSH_DENORMALS=$flush "$BIN/convexp" train-mnist --set "data.root=$DATA/mnist" --set "train.epochs=$EPOCHS" --set train.weight_decay=1e-3 \
      --set train.schedule=cosine --out "$OUT" --name "flush-$flush" -q > /dev/null
done
uptime
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

print("| CPU denormals | seconds per epoch (training) | best val acc | test acc |")
print("| --- | --- | --- | --- |")
for run in sorted(Path(sys.argv[1]).glob("*-flush-*"), reverse=True):
    summary = json.loads((run / "summary.json").read_text())
    seconds = ", ".join(f"{s:.1f}" for s in summary["epoch_seconds"])
    print(f"| {summary['cpu_denormals']} | {seconds} | {summary['best_val_accuracy']:.4f} | {summary['test_accuracy']:.4f} |")
PY
