#!/usr/bin/env bash
# Issue 28's measurement: a search over train-mnist (full MNIST, 4 epochs; lr, batch size, weight
# decay, schedule), tpe + hyperband against random + no pruning, at the same budget of epochs
# trained, once per sampler seed. Prints, per search, the best validation accuracy it reached and
# the epochs it spent. Each search is an ordinary `convexp sweep` folder under $OUT.
#
#   CONVEXP_DATA=../shared/data bash benchmarks/search-vs-random.sh [TRIALS] [SEEDS...]
#
# TRIALS: the random search's trials (default 10); its epochs (TRIALS x 4) are the budget the
# tpe + hyperband search gets (--epoch-budget). SEEDS: the sampler seeds (default 0 1 2).
# STARTUP: tpe's random start-up trials (default 10, Optuna's; at 10 trials' budget tpe never leaves
# them, so its first 10 draws are the random search's own).
# SEARCHES: which to run (default "random tpe-hyperband"; one of them completes a measurement cut short).
# JOBS: trials at once (default 2, one thread each). EXTRA: more options for every sweep, e.g. a smoke run on mnist-mini:
#   EXTRA="--set train.max_batches=5 --set data.val_split=0.2" with $CONVEXP_DATA/mnist -> mnist-mini
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-10}
shift || true
SEEDS=${*:-0 1 2}
OUT=${OUT:-runs/search-vs-random}
DATA=${CONVEXP_DATA:?set CONVEXP_DATA to the folder holding mnist/ (e.g. ../shared/data)}
BIN=${BIN:-.venv/bin}
SEARCHES=${SEARCHES:-random tpe-hyperband}
STARTUP=${STARTUP:-10}
EPOCHS=4
SPACE=(--space "train.lr=loguniform(1e-4, 1e-2)" --space "train.batch_size=choice(16, 32, 64, 128)"
       --space "train.weight_decay=choice(0, 1e-5, 1e-4, 1e-3)" --space "train.schedule=choice(constant, cosine)")
COMMON=(train-mnist "${SPACE[@]}" --set "data.root=$DATA/mnist" --set "train.epochs=$EPOCHS" --seeds 0
        --jobs "${JOBS:-2}" --threads 1 --yes --out "$OUT" -q ${EXTRA:-})

lscpu | grep -E "Model name|^CPU\(s\)"
echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
uptime
for seed in $SEEDS; do
  if [[ " $SEARCHES " == *" random "* ]]; then
    "$BIN/convexp" sweep "${COMMON[@]}" --set "seed=$seed" --sampler random --pruner none --trials "$TRIALS" \
        --name "random-seed$seed" > /dev/null
  fi
  if [[ " $SEARCHES " == *" tpe-hyperband "* ]]; then
    name="tpe-hyperband-seed$seed"
    [[ "$STARTUP" == 10 ]] || name="tpe-startup$STARTUP-hyperband-seed$seed"
    "$BIN/convexp" sweep "${COMMON[@]}" --set "seed=$seed" --sampler tpe --pruner hyperband --trials 1000 \
        --epoch-budget "$((TRIALS * EPOCHS))" --startup-trials "$STARTUP" --name "$name" > /dev/null
  fi
done
uptime
"$BIN/python" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

rows = []
for sweep in sorted(Path(sys.argv[1]).glob("*-sweep-*")):
    summary = json.loads((sweep / "summary.json").read_text())
    search, best = summary.get("search", {}), summary.get("best", {})
    rows.append((sweep.name.split("-sweep-")[1], summary.get("status"), search.get("completed", 0) + search.get("pruned", 0),
                 search.get("pruned", 0), search.get("epochs_trained"), best.get("best_val_accuracy"),
                 best.get("test_accuracy", {}).get("mean"), best.get("values")))
print("| search | status | trials | pruned | epochs trained | best val acc | its test acc | chosen point |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
def number(value):
    return "-" if value is None else f"{value:.4f}"

for name, status, trials, pruned, epochs, val, test, values in rows:
    print(f"| {name} | {status} | {trials} | {pruned} | {epochs} | {number(val)} | {number(test)} | {values} |")
EOF
