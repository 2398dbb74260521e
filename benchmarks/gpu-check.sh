#!/usr/bin/env bash
# Issue 14's checks on a lent GPU, as one call: CUDA tests, training with each conv kind,
# determinism, varres-pool, processes sharing the GPU, `convexp bench`, a profile.
#
#   bash benchmarks/gpu-check.sh [stage ...]     stages: tests train determinism varres concurrency bench profile
#                                                 bench-graphs varres-sweep study
#
# Expects the data packed under .gpudata/ (mnist.tar.gz, varres.tar.gz, mini.tar.gz, made from
# ../shared/data with tar) and, where the GPU machine's Python lacks them, wheels under .whl/.
# Logs go to $OUT (the device tool's) or gpu-out/; each stage has its own time limit.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
say() { echo "[$(( $(date +%s) - START ))s] $*"; }
STAGES=${*:-tests train determinism varres concurrency bench profile}

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 COLUMNS=150
mkdir -p /tmp/data
for f in .gpudata/*.tar.gz; do tar -xzf "$f" -C /tmp/data; done
export CONVEXP_DATA=/tmp/data
RUNS=/tmp/runs
cx() { python3 -m convexp "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
python3 -c "import torch, torchvision, typer; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'typer', typer.__version__, torch.cuda.get_device_name(), 'cores', __import__('os').cpu_count())"
say "set up"

for stage in $STAGES; do
case $stage in
tests)
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -30
    ;;
train)  # one epoch of full MNIST (50,000 digits, batch 16) per conv kind
    for conv in native unfold unfold-reference; do
        timeout 150 python3 -m convexp train-mnist --device cuda --set train.epochs=1 --set model.conv=$conv \
            --out $RUNS --name $conv -q 2>&1 | grep -E "epoch 1/1|error|Error" | tail -2
        say "train-mnist $conv"
    done
    ;;
determinism)  # train.deterministic twice, per conv kind: metrics and every batch loss must match
    for conv in ${DETERMINISM_CONVS:-native}; do
        for n in 1 2; do
            timeout 120 python3 -m convexp train-mnist --device cuda --set train.epochs=1 --set train.deterministic=true \
                --set model.conv=$conv --out $RUNS --name det-$conv-$n -q 2>&1 | grep -E "epoch 1/1|error|Error" | tail -2
        done
        a=$(ls -d $RUNS/*det-$conv-1) b=$(ls -d $RUNS/*det-$conv-2)
        cmp $a/metrics.csv $b/metrics.csv && cmp $a/batches.csv $b/batches.csv && echo "deterministic $conv: identical"
    done
    say "determinism"
    ;;
varres)  # one epoch of the global-pooling net on the course's mnist-varres, and of the resize baseline
    timeout 150 python3 -m convexp varres-pool --device cuda --set train.epochs=1 --set "seeds=[0]" \
        --set "model.pooling=[max]" --out $RUNS --name pool -q 2>&1 | grep -E "epoch 1/1|error|Error|max " | tail -3
    say "varres-pool"
    if [ -n "${ALL_VARRES:-}" ]; then  # the other study steps' epochs too
        timeout 120 python3 -m convexp varres-resize --device cuda --set train.epochs=1 --out $RUNS --name resize -q 2>&1 \
            | grep -E "epoch 1/1|error|Error" | tail -2
        timeout 120 python3 -m convexp augment --device cuda --set train.epochs=1 --out $RUNS --name aug -q 2>&1 \
            | grep -E "epoch 1/1|error|Error" | tail -3
        say "varres-resize, augment"
    fi
    ;;
concurrency)  # N one-epoch train-mnist processes at once on the one GPU: does throughput scale?
    for n in ${PROCESSES:-4}; do
        t0=$(date +%s.%N)
        for i in $(seq $n); do
            OMP_NUM_THREADS=1 timeout 200 python3 -m convexp train-mnist --device cuda --set train.epochs=1 --seed $i \
                --out $RUNS --name par$n-$i -q >/dev/null 2>&1 &
        done
        wait
        t1=$(date +%s.%N)
        echo "$n processes at once: wall $(python3 -c "print(round($t1-$t0,1))") s; epoch seconds:" \
            $(for d in $RUNS/*par$n-*; do python3 -c "import json;print(json.load(open('$d/summary.json')).get('seconds_per_epoch'))"; done)
    done
    say "concurrency"
    ;;
bench)
    COLUMNS=230 timeout 300 python3 -m convexp bench --device cuda --set "threads=[1]" --set "batch_sizes=[16,64,256,1024]" \
        --set "convs=[native,unfold,unfold-reference]" --set rounds=1 --set min_run_time=0.1 --out $RUNS --name gpu 2>&1 \
        | grep -v "^threads" | tail -60
    say "bench"
    ;;
profile)
    timeout 120 python3 benchmarks/profile_step.py --batch 256 1024 --convs native unfold > $OUT/profile.txt 2>&1
    grep -E "^==|Self CUDA time total|Self CPU time total" $OUT/profile.txt
    say "profile"
    ;;
bench-graphs)  # the training step captured as one CUDA graph (bench's cuda_graphs key)
    COLUMNS=230 timeout 200 python3 -m convexp bench --device cuda --set "threads=[1]" --set "batch_sizes=[16,256]" \
        --set "convs=[native,unfold]" --set rounds=1 --set min_run_time=0.1 --set cuda_graphs=true --out $RUNS --name graphs 2>&1 \
        | grep -v "^threads" | tail -40
    say "bench with CUDA graphs"
    ;;
varres-sweep)  # issue 16: which recipe beats the report's 98.89% within 29,066 parameters (validation only)
    set -f  # the grid's brackets are values, not file patterns
    GRID=${GRID:-"--grid model.widths,model.channels=[[[16,32],80],[[16,32,32],49]] --grid model.norm=[batch,layer] --grid augment.enabled=[false,true]"}
    timeout ${SWEEP_SECONDS:-380} python3 -m convexp sweep varres-pool --config configs/varres-best.yaml --device ${DEVICE:-cuda} \
        $GRID --seeds ${SEEDS:-0,1,2} --jobs ${JOBS:-14} ${SWEEP_EXTRA:-} --out $RUNS --name varres -q 2>&1 \
        | grep -vE "epoch [0-9]+/[0-9]+ \|" | tail -40
    set +f
    say "varres sweep"
    ;;
study)  # the whole real-data study (`make reproduce`'s command), 3 seeds, steps in parallel on the GPU
    timeout ${STUDY_SECONDS:-380} python3 -m convexp reproduce --device cuda --jobs ${JOBS:-10} --out $RUNS --name gpu -q 2>&1 \
        | grep -vE "epoch [0-9]+/[0-9]+ \|" | tail -45
    say "study"
    timeout 60 python3 -m convexp report "$(ls -td $RUNS/*-reproduce-gpu | head -n 1)" 2>&1 | tail -2
    say "report"
    ;;
esac
done

# Everything small the runs wrote (no models), in one file: the device tool returns at most 8.
(cd $RUNS 2>/dev/null && tar -czf "$OUT/gpu-runs.tar.gz" --exclude='*.pt' .)
say "done"
