#!/usr/bin/env bash
# The checks CI cannot run, in one time-boxed pass on a CUDA machine:
#   1. the CUDA tests (every test marked `gpu`: kernels against their CPU references, pretraining on CUDA)
#   2. the kernel benchmark (tools/bench.py) and the batched-grid benchmark at 4096 envs
#   3. a wall-clock-capped `internal-rl pretrain paper-grid` (6 x 256 Transformer, batch 1024, the paper's
#      100K episodes) whose model weights are exported for CPU-side probing and metacontroller work
#
#   bash tools/gpu_checks.sh [OUT]              # OUT defaults to gpu-checks/
#   PY=python3 PRETRAIN_MINUTES=4 PRETRAIN_ARGS="--data.num-episodes 400000" bash tools/gpu_checks.sh /tmp/gc
#
# PY is the interpreter command (default: the workspace's `uv run --no-sync python`); SKIP lists stages
# to leave out (e.g. SKIP="bench-kernels pretrain"); DEADLINE (epoch seconds) shortens the pretraining so
# that the script ends about two minutes before it. Each stage has its
# own time limit and log, so one failing stage does not cost the others; OUT/summary.txt has one line per
# stage with its exit status and seconds.
set -u
OUT=${1:-gpu-checks}
PY=${PY:-uv run --no-sync python}
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-4}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
failed=0

stage() {  # stage NAME SECONDS CMD...: run CMD under a time limit, log to OUT/NAME.log
    local name=$1 limit=$2 start rc
    shift 2
    case " ${SKIP:-} " in *" $name "*) echo "== $name skipped"; return ;; esac
    start=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $(($(date +%s) - start))s" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || failed=1
}

# shellcheck disable=SC2086  # PY may be several words
stage env 60 bash -c "nvidia-smi; $PY -c 'import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())'"
stage gpu-tests 240 $PY -m pytest -o addopts= --import-mode=importlib -p no:cacheprovider --continue-on-collection-errors -ra -m gpu \
    shared/tests packages/internal-rl/tests/test_pretrain.py packages/internal-rl/tests/test_envs_grid.py
stage bench-grid 90 $PY tools/bench_internal_rl.py --device cuda --out "$OUT"
stage bench-kernels 240 $PY tools/bench.py --out "$OUT"
if [ -n "${DEADLINE:-}" ]; then  # data generation, the final evaluation and rollouts need ~2 min beyond training
    PRETRAIN_MINUTES=$(python3 -c "print(round(max(0.5, min($PRETRAIN_MINUTES, ($DEADLINE - $(date +%s) - 120) / 60)), 2))")
fi
stage pretrain $((${PRETRAIN_MINUTES%.*} * 60 + 180)) $PY -m internal_rl.cli pretrain paper-grid \
    --max-minutes "$PRETRAIN_MINUTES" --eval-every 250 --log-every 50 --run-root "$OUT/runs" ${PRETRAIN_ARGS:-}

# every checkpoint's weights and state (no optimizer state: 3x smaller), for `load_backbone`
run=$(ls -d "$OUT"/runs/internal-rl/*/ 2>/dev/null | tail -n 1)
if [ -n "$run" ]; then
    for ckpt in "$run"checkpoints/step-*; do
        mkdir -p "$OUT/base/checkpoints/$(basename "$ckpt")"
        cp "$ckpt/model.safetensors" "$ckpt/state.json" "$OUT/base/checkpoints/$(basename "$ckpt")/"
    done
    cp "$run"{results.json,metrics.jsonl,config.json} "$OUT/base/" 2>/dev/null
fi
exit $failed
