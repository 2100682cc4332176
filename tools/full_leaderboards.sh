#!/usr/bin/env bash
# The full-size leaderboards (issue 32 item 4): every method, 5 seeds, every eval set whole (10,000 MNIST test images,
# 10,000 per OOD set, 15 x 10,000 MNIST-C) except the attack sets built against each method (fgsm, pgd, uap,
# fooling), which keep their first 2,000 test images (eval.max_attack=2000). Near OOD: notMNIST + Fashion-MNIST for
# MNIST, MNIST + notMNIST for Fashion-MNIST; notMNIST is read from DATA_DIR (see docs/data.md), never downloaded here.
#
#   bash tools/full_leaderboards.sh DATA_DIR OUT_DIR [bench run options...]   # e.g. ... ~/data runs
#
# Options after OUT_DIR go to both runs, e.g. `--set executor.cpus_per_unit=1` to keep each run to one thread when
# the machine does other work.
#
# Resumable: run it again with the same arguments and each run skips its finished cells (a cut-off training continues
# from its last finished epoch). Measured for MNIST on a 2-core AMD EPYC with `--set executor.cpus_per_unit=1
# --jobs 2`: 63,061 worker-seconds, 8.8 h for the two workers (results/timeline.md); Fashion-MNIST costs about as
# much. The script prints each run's wall time.
#
# Sittings shorter than a run (a session that ends, and a disk that does not outlive it): CHUNK=a,b runs only those
# chunks of tools/leaderboard_chunks.txt (methods x seeds of one world), each into OUT_DIR/<world>-<chunk>; bank each
# finished chunk in the repository with `python tools/bank_chunk.py OUT_DIR/<world>-<chunk>`, and
# tools/leaderboard_reports.sh reports a world from its banked chunks when its whole run is absent.
set -u
DATA_DIR=${1:?usage: bash tools/full_leaderboards.sh DATA_DIR OUT_DIR}
OUT=${2:?usage: bash tools/full_leaderboards.sh DATA_DIR OUT_DIR}
shift 2
cd "$(dirname "$0")/.."
TIMEFORMAT='wall %R s, user %U s, sys %S s'
ATTACKS="fgsm,pgd:eps=0.1,fgsm:eps=0.1,eot=10,pgd:eps=0.1,eot=10,fgsm-transfer,uap:xi=0.2,p=inf,uap:xi=4,p=2,fooling"
COMMON=(--profile quick --set eval.max_attack=2000 --set eval.conformal=true
        --data-dir "$DATA_DIR"
        --cache-dir "$OUT/cache" --jobs 1 --no-progress "$@")
resume() { [ -f "$1/manifest.json" ] && echo --resume; }  # bench refuses to resume a folder that holds no run

MNIST_SETS="mnist,occlusion:random-squares,pmnist,$ATTACKS,mnistc,ood:notmnist,ood:fashion,ood:gaussian,ood:uniform"
FASHION_SETS="fashion,occlusion:random-squares,pmnist,$ATTACKS,mnistc,ood:mnist,ood:notmnist,ood:gaussian,ood:uniform"

if [ -n "${CHUNK:-}" ]; then
    for c in ${CHUNK//,/ }; do
        line=$(awk -v c="$c" '$1 == c' tools/leaderboard_chunks.txt)
        [ -n "$line" ] || { echo "CHUNK=$c: no such chunk in tools/leaderboard_chunks.txt"; exit 2; }
        read -r _ world methods seeds <<< "$line"
        case $world in
            mnist) WORLD_ARGS=(--datasets "$MNIST_SETS") ;;
            fashion) WORLD_ARGS=(--benchmark fashion --datasets "$FASHION_SETS") ;;
            *) echo "tools/leaderboard_chunks.txt: chunk $c names world $world (mnist or fashion)"; exit 2 ;;
        esac
        run="$OUT/$world-$c"
        echo "== $world chunk $c $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null)"
        # a chunk put back from the bank has rows, not checkpoints: compute its missing cells, train nothing again
        time python -m bench run "${WORLD_ARGS[@]}" --methods "$methods" --seeds "$seeds" "${COMMON[@]}" \
            --set executor.refit=false --out "$run" $(resume "$run")
    done
    exit 0
fi

echo "== MNIST $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null)"
time python -m bench run --datasets "$MNIST_SETS" --methods '*' --seeds 0,1,2,3,4 "${COMMON[@]}" \
    --out "$OUT/mnist-full" $(resume "$OUT/mnist-full")
echo "== Fashion-MNIST $(date -u +%FT%TZ)"
time python -m bench run --benchmark fashion --datasets "$FASHION_SETS" --methods '*' --seeds 0,1,2,3,4 "${COMMON[@]}" \
    --out "$OUT/fashion-full" $(resume "$OUT/fashion-full")
