#!/usr/bin/env bash
# The checks CI cannot run, in one pass of at most 12 minutes on a CUDA machine:
#   1. the CUDA tests (every test marked `gpu`: kernels, split attention included, against their CPU references;
#      pretraining on CUDA)
#   2. the kernel benchmark (tools/bench.py: bottleneck attention reference / flex / split / dense causal,
#      fwd and fwd+bwd, 1K-16K tokens; point projection) and the batched-grid benchmark at 4096 envs
#   3. a wall-clock-capped `internal-rl pretrain paper-grid` (6 x 256 Transformer, batch 1024, the paper's
#      100K episodes) whose model weights are exported for CPU-side probing and metacontroller work
#
#   bash tools/gpu_checks.sh [OUT]              # OUT defaults to gpu-checks/
#   PY=python3 PRETRAIN_MINUTES=4 PRETRAIN_ARGS="--data.num-episodes 400000" bash tools/gpu_checks.sh /tmp/gc
#
# Results are named for the card (its name as a slug, e.g. nvidia-h200): OUT/<card>.json|md (kernels),
# OUT/internal-rl-<card>.json|md (grid), OUT/summary-<card>.txt (one line per stage: exit status, seconds),
# OUT/<stage>-<card>.log, the pretraining run under OUT/runs and its exported weights under OUT/base.
#
# Time: the whole script ends within TOTAL_SECONDS (default 720 = 12 min) of its start, or two minutes before
# DEADLINE (epoch seconds) when that is sooner. Each stage has its own cap (seconds; override by environment):
# ENV_S=30, GPU_TESTS_S=180, BENCH_KERNELS_S=240, BENCH_GRID_S=60, BENCH_PRETRAIN_S=90, and never runs past the end; the pretraining
# gets what is left (its training time is PRETRAIN_MINUTES at most, default 4, less ~150 s for data generation,
# evaluation and rollouts). The kernel benchmark saves after every sequence length, so a capped run still
# leaves its rows (marked partial). PY is the interpreter command (default: the workspace's
# `uv run --no-sync python`); SKIP lists stages to leave out (e.g. SKIP="bench-kernels pretrain").
# One failing stage does not cost the others.
set -u
START=$(date +%s)
OUT=${1:-gpu-checks}
PY=${PY:-uv run --no-sync python}
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-4}
END=$((START + ${TOTAL_SECONDS:-720}))
if [ -n "${DEADLINE:-}" ] && [ $((DEADLINE - 120)) -lt "$END" ]; then END=$((DEADLINE - 120)); fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# shellcheck disable=SC2086  # PY may be several words
CARD=$(timeout 60 $PY -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))" 2>/dev/null || echo unknown-gpu)
failed=0

stage() {  # stage NAME SECONDS CMD...: run CMD under min(SECONDS, time left), log to OUT/NAME-CARD.log
    local name=$1 limit=$2 start rc left
    shift 2
    case " ${SKIP:-} " in *" $name "*) echo "== $name skipped"; return ;; esac
    start=$(date +%s)
    left=$((END - start))
    [ "$limit" -le "$left" ] || limit=$left
    if [ "$limit" -le 0 ]; then
        echo "$name rc=skipped-no-time-left 0s" | tee -a "$OUT/summary-$CARD.txt"
        failed=1
        return
    fi
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$OUT/$name-$CARD.log" 2>&1
    rc=$?
    echo "$name rc=$rc $(($(date +%s) - start))s (limit ${limit}s)" | tee -a "$OUT/summary-$CARD.txt"
    tail -n 5 "$OUT/$name-$CARD.log"
    [ "$rc" -eq 0 ] || failed=1
}

echo "card $CARD; ends by $(date -u -d "@$END" +%H:%M:%S) UTC" | tee "$OUT/summary-$CARD.txt"
# shellcheck disable=SC2086
stage env "${ENV_S:-30}" bash -c "nvidia-smi; $PY -c 'import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())'"
# shellcheck disable=SC2086
stage gpu-tests "${GPU_TESTS_S:-180}" $PY -m pytest -o addopts= --import-mode=importlib -p no:cacheprovider --continue-on-collection-errors -ra -m gpu \
    shared/tests packages/internal-rl/tests/test_pretrain.py packages/internal-rl/tests/test_envs_grid.py
# shellcheck disable=SC2086
stage bench-kernels "${BENCH_KERNELS_S:-240}" $PY tools/bench.py --out "$OUT"
# shellcheck disable=SC2086
stage bench-grid "${BENCH_GRID_S:-60}" $PY tools/bench_internal_rl.py --device cuda --out "$OUT"
# shellcheck disable=SC2086
stage bench-pretrain "${BENCH_PRETRAIN_S:-90}" $PY tools/bench_internal_rl_pretrain.py --device cuda --out "$OUT"

# the pretraining: whatever is left, ~150 s of it for data generation, the final evaluation and rollouts
LEFT=$((END - $(date +%s)))
PRETRAIN_MINUTES=$(python3 -c "print(round(max(0.5, min($PRETRAIN_MINUTES, ($LEFT - 150) / 60)), 2))")
# shellcheck disable=SC2086
stage pretrain "$LEFT" $PY -m internal_rl.cli pretrain paper-grid \
    --max-minutes "$PRETRAIN_MINUTES" --eval-every 250 --log-every 50 --run-root "$OUT/runs" --compile ${PRETRAIN_ARGS:-}

# every checkpoint's weights and state (no optimizer state: 3x smaller), for `load_backbone`
run=$(ls -d "$OUT"/runs/internal-rl/*/ 2>/dev/null | tail -n 1)
if [ -n "$run" ]; then
    for ckpt in "$run"checkpoints/step-*; do
        [ -d "$ckpt" ] || continue
        mkdir -p "$OUT/base/checkpoints/$(basename "$ckpt")"
        cp "$ckpt/model.safetensors" "$ckpt/state.json" "$OUT/base/checkpoints/$(basename "$ckpt")/"
    done
    cp "$run"{results.json,metrics.jsonl,config.json} "$OUT/base/" 2>/dev/null
fi
echo "total $(($(date +%s) - START))s" | tee -a "$OUT/summary-$CARD.txt"
exit $failed
