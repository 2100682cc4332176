#!/usr/bin/env bash
# GPU check, sized for at most 8 minutes on one H100 (the stages' guards: 120 + 150 + 2 x 45 + 120 s). Run from the
# repository root:
#
#   bash tools/gpu-check.sh               # gpu tests, TrustGAN epoch vs the reference, eager vs captured training
#                                         # (train.compile), the quick grid (one seed) and its GPU cost table
#   bash tools/gpu-check.sh --confidnet   # instead: ConfidNet's SmallConvNet block, 100 classifier epochs, 3 seeds
#                                         # (long: hours on the CPU; give it its own session)
#   bash tools/gpu-check.sh --duq         # instead: DUQ's Fashion-MNIST recipe (the duq profile), msp and duq, seeds
#                                         # DUQ_SEEDS (default "0 1 2"); ~2.4 h a seed on both cores of a 2-core CPU
#
# Every stage runs under its own time guard (seconds, overridable: GUARD_TESTS, GUARD_TRUSTGAN, GUARD_COMPILE,
# GUARD_GRID, GUARD_CONFIDNET, GUARD_DUQ) and appends its figures to $OUT/gpu-check.txt as soon as it ends, so a stage that
# overruns or fails still leaves the earlier figures and its own partial ones. $OUT defaults to ./gpu-check-out.
# Needs: torch with CUDA importable (the system python, or .venv if present); bench is installed editable (no
# dependencies fetched) when it is not importable. TrustGAN's reference: third_party/trustgan-ref (git-ignored; a
# copy of ThalesGroup/trustGAN at c6211e1, shipped with the device runner's carry option).
#
#   GPU_CHECK_DRY=1 bash tools/gpu-check.sh   # the script's plumbing on the CPU (smoke profile, small TrustGAN epoch,
#                                             # every stage and guard), so a GPU loan is not spent on a script bug
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
FIG="$OUT/gpu-check.txt"
WORK="$(mktemp -d)"
START=$(date +%s)
note() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$FIG"; }

# --- environment (no network assumed: install nothing but bench itself) -----------------------------------------
# a carried .venv may point at another machine's paths: use it only if it works
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then . .venv/bin/activate; fi
PY="$(command -v python || command -v python3)"
if ! "$PY" -c 'import torch' 2>/dev/null; then
    note "torch not importable with $PY; trying pip install -e .[dev] (needs PyPI)"
    "$PY" -m pip install -q -e ".[dev]" >"$OUT/pip.log" 2>&1 || { note "FAIL: no torch and pip install failed (see pip.log)"; exit 1; }
fi
if ! "$PY" -c 'import bench.methods' 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 \
        || "$PY" -m pip install -q -e ".[dev]" >>"$OUT/pip.log" 2>&1 || { note "FAIL: cannot install bench (pip.log)"; exit 1; }
fi
"$PY" - <<'EOF' | tee -a "$FIG"
import torch, platform
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
EOF
DEV=cuda PROFILE=quick TG=() CAPTURE=reduce-overhead
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    # the compiled TrustGAN epoch is left out: compiling trustgan-net's steps alone takes minutes of CPU
    DEV=cpu PROFILE=smoke TG=(--train 512 --val 256 --batch 128) CAPTURE=""
    note "DRY RUN on the CPU: smoke profile, figures meaningless"
else
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || { note "FAIL: no CUDA device"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$FIG" 2>/dev/null || true

guarded() {  # guarded SECONDS LABEL CMD...: run with a time limit (SIGINT first, then KILL), log wall time and rc
    local limit=$1 label=$2; shift 2
    local t0=$(date +%s)
    timeout -s INT -k 15 "$limit" "$@" >"$OUT/$label.log" 2>&1
    local rc=$?
    note "$label: rc=$rc wall=$(( $(date +%s) - t0 ))s (guard ${limit}s$([ $rc = 124 ] && echo ', TIMED OUT'))"
    return $rc
}

summarise_run() {  # per-method cost rows and progress of a (possibly partial) run directory
    "$PY" - "$1" <<'EOF' | tee -a "$FIG"
import json, sys, pathlib, collections
run = pathlib.Path(sys.argv[1])
cells = sorted((run / "cells").glob("*.json"), key=lambda p: p.stat().st_mtime) if (run / "cells").exists() else []
print(f"  cells done: {len(cells)}")
cost = collections.defaultdict(dict)
for p in cells:
    for r in json.loads(p.read_text()):
        if r["eval_set"] == "cost":
            cost[r["method"]][r["metric"]] = r["value"]
done = {}  # seconds after the first cell at which each method's last cell was written (the grid's timeline)
for p in cells:
    rows = json.loads(p.read_text())
    if rows:
        done[rows[0]["method"]] = p.stat().st_mtime - cells[0].stat().st_mtime
keys = ["sec_per_epoch", "first_epoch_sec", "train_sec_total", "infer_ms_per_1k", "peak_cuda_mem_mb"]
print("  method          " + "".join(f"{k:>18}" for k in keys) + f"{'last cell at s':>16}")
for m in sorted(set(cost) | set(done)):
    print(f"  {m:15} " + "".join(f"{cost[m].get(k, float('nan')):18.2f}" for k in keys) + f"{done.get(m, -1):16.1f}")
err = run / "errors.json"
if err.exists() and json.loads(err.read_text()):
    print("  ERRORS:", [(e["method"], e["error"][:80]) for e in json.loads(err.read_text())])
EOF
}

if [ "${1:-}" = "--confidnet" ]; then
    # docs/confidnet-reproduction.md's SmallConvNet block at the paper's 100 classifier epochs, 3 seeds, on CUDA
    for S in 0 1 2; do
        guarded "${GUARD_CONFIDNET:-3000}" "confidnet-scn100-s$S" "$PY" -m bench run --profile paper \
            --backbone smallconvnet --folds 1 --datasets mnist --device cuda --methods msp,mcdropout,trustscore,confidnet \
            --seeds $S --out "$OUT/confidnet-scn100-s$S" --cache-dir "$WORK/cache" --no-progress
        summarise_run "$OUT/confidnet-scn100-s$S"
    done
    note "done"
    exit 0
fi

if [ "${1:-}" = "--duq" ]; then
    # issue 34's DUQ fidelity: Fashion-MNIST vs MNIST AUROC at the paper's network and recipe (paper: 0.955, accuracy
    # 92.4%); notMNIST too when DATA_DIR holds it (docs/data.md). Results per seed: $OUT/duq-paper-s<seed>.csv
    SETS=fashion,ood:mnist DATA=() SMALL=()
    if [ -n "${DATA_DIR:-}" ]; then SETS=$SETS,ood:notmnist DATA=(--data-dir "$DATA_DIR"); fi
    [ "${GPU_CHECK_DRY:-0}" = 1 ] && SMALL=(--set train.epochs=1 --set split.max_train=512 --set eval.max_eval=200)
    for S in ${DUQ_SEEDS:-0 1 2}; do
        guarded "${GUARD_DUQ:-240}" "duq-paper-s$S" "$PY" -m bench run --profile duq --methods msp,duq --seeds $S \
            --datasets $SETS "${DATA[@]}" "${SMALL[@]}" --device $DEV --out "$WORK/duq-paper-s$S" \
            --cache-dir "$WORK/duq-cache" --no-progress --jobs 1
        summarise_run "$WORK/duq-paper-s$S"
        [ -f "$WORK/duq-paper-s$S/results.csv" ] && cp "$WORK/duq-paper-s$S/results.csv" "$OUT/duq-paper-s$S.csv" \
            && grep -E ',(accuracy|auroc|ood_auroc),' "$OUT/duq-paper-s$S.csv" | cut -d, -f2,6,9,10 | sed 's/^/  /' \
            | tee -a "$FIG"
    done
    note "done"
    exit 0
fi

# --- 1. the gpu tests ---------------------------------------------------------------------------------------------
guarded "${GUARD_TESTS:-120}" gpu-tests "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
tail -n 3 "$OUT/gpu-tests.log" | sed 's/^/  /' | tee -a "$FIG"

# --- 2. TrustGAN's whole epoch, net 7 / gan 5, batch 512, ours eager and captured (trustgan.compile) vs the
#     reference (same process) ----------------------------------------------------------------------------------
if [ -f third_party/trustgan-ref/py/trustgan/training.py ]; then
    guarded "${GUARD_TRUSTGAN:-150}" trustgan-epoch "$PY" tools/trustgan_vs_reference.py --device $DEV "${TG[@]}" \
        --compile none${CAPTURE:+,$CAPTURE} --out "$OUT/trustgan-epoch.json"
else
    note "trustgan-epoch: no third_party/trustgan-ref (reference not shipped); ours alone"
    guarded "${GUARD_TRUSTGAN:-150}" trustgan-epoch "$PY" tools/trustgan_vs_reference.py --device $DEV "${TG[@]}" \
        --compile none${CAPTURE:+,$CAPTURE} --only ours --out "$OUT/trustgan-epoch.json"
fi
[ -f "$OUT/trustgan-epoch.json" ] && { sed 's/^/  /' "$OUT/trustgan-epoch.json"; echo; } >>"$FIG"

# --- 2b. eager vs captured training and inference (train.compile and eval.compile = reduce-overhead: torch.compile +
#     CUDA graphs); the cost rows give seconds per epoch and inference ms per 1k of each, same process kind ---------
for MODE in none reduce-overhead; do
    guarded "${GUARD_COMPILE:-45}" "compile-$MODE" "$PY" -m bench run --profile $PROFILE --methods msp --seeds 0 \
        --datasets mnist --device $DEV --set train.compile=$MODE --set eval.compile=$MODE --out "$WORK/compile-$MODE" \
        --cache-dir "$WORK/compile-cache" --no-progress
    summarise_run "$WORK/compile-$MODE"
done

# --- 3. the quick grid of every method, one seed, fresh cache (partial progress is summarised on timeout) ---------
guarded "${GUARD_GRID:-120}" quick-grid "$PY" -m bench run --methods '*' --profile $PROFILE --seeds 0 --device $DEV \
    --out "$WORK/quick-grid" --cache-dir "$WORK/grid-cache" --no-progress
summarise_run "$WORK/quick-grid"
# the device runner returns at most 8 files from $OUT: keep the run itself outside it, bring back its rows
[ -f "$WORK/quick-grid/results.csv" ] && cp "$WORK/quick-grid/results.csv" "$OUT/quick-grid-results.csv"
# the GPU cost table (seconds per epoch, first epoch, peak CUDA memory, inference ms per 1k) of what finished
"$PY" -m bench report "$WORK/quick-grid" --groups cost --allow-partial --out "$OUT/gpu-cost.md" \
    >>"$OUT/quick-grid.log" 2>&1 && note "cost table: $OUT/gpu-cost.md"
note "done (figures in $FIG)"
