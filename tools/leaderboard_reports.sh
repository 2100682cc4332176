#!/usr/bin/env bash
# Every committed leaderboard file from the runs of tools/full_leaderboards.sh (issue 32 item 4, issue 33 item 5):
#
#   bash tools/leaderboard_reports.sh OUT_DIR [RESULTS_DIR] [bench report options...]   # e.g. ... runs results
#
# OUT_DIR is full_leaderboards.sh's (OUT_DIR/mnist-full, OUT_DIR/fashion-full); RESULTS_DIR (default results) gets,
# per world (MNIST at its top, Fashion-MNIST under fashion/): leaderboard.md/.csv/.tex and plots/ (every group, 95%
# CIs), guarantees.md/.csv (failure prediction and guarantees on the test set), coverage.md/.csv (coverage under
# shift, per family of eval sets), versus-msp.md (the image-level test of every method sharing msp's network
# against it), daggers.txt (the † count) and timeline.md (wall time per unit, less the stops listed in the run's
# pauses.txt); then worlds.md (which rankings change between the two worlds). The cost table is not taken from
# these runs (two workers share the CPU and the load varies): results/README.md names the separate sequential run
# it comes from. A world whose run is absent or unfinished is skipped with a line. Options after RESULTS_DIR go to every
# `bench report` (e.g. --allow-partial to try the script on a run still going).
#
# A world run in chunks (CHUNK=... bash tools/full_leaderboards.sh; banked with tools/bank_chunk.py and put back with
# `python tools/bank_chunk.py --restore results/fashion/runs OUT_DIR`) is reported from OUT_DIR/<world>-<chunk> when
# OUT_DIR/<world>-full is absent: the same tables, one timeline per chunk; its plots and versus-msp.md need the
# per-image predictions, which are not banked, so tools/chunk_figures.sh writes them when each chunk finishes.
set -eu
OUT=${1:?usage: bash tools/leaderboard_reports.sh OUT_DIR [RESULTS_DIR] [bench report options...]}
RESULTS=${2:-results}
shift $(( $# >= 2 ? 2 : 1 ))
EXTRA=("$@")
cd "$(dirname "$0")/.."
TABLES='id,occlusion,adversarial,fooling,ood-*,shift'

world() {  # world NAME DEST: the whole run OUT/NAME-full, else every chunk OUT/NAME-<chunk> of leaderboard_chunks.txt
    local name=$1 dest=$2 runs=() chunks=() c
    if [ -f "$OUT/$name-full/manifest.json" ]; then
        runs=("$OUT/$name-full")
    else
        mapfile -t chunks < <(awk -v w="$name" '$1 !~ /^#/ && $2 == w {print $1}' tools/leaderboard_chunks.txt)
        for c in "${chunks[@]}"; do
            if [ ! -f "$OUT/$name-$c/manifest.json" ]; then
                echo "skip: $name has no run at $OUT/$name-full and no chunk $c at $OUT/$name-$c"; return 0
            fi
            runs+=("$OUT/$name-$c")
        done
        [ ${#runs[@]} -gt 0 ] || { echo "skip: no run at $OUT/$name-full"; return 0; }
    fi
    mkdir -p "$dest"
    local figures=(--plots "$dest/plots") order=()
    if [ ${#runs[@]} -gt 1 ]; then
        figures=()  # chunks: tools/chunk_figures.sh drew them from each chunk's predictions
        # rows in name order, as a whole run's (a report of several runs lists them run by run)
        order=(--methods "$(awk -v w="$name" '$1 !~ /^#/ && $2 == w {print $3}' tools/leaderboard_chunks.txt \
            | tr , '\n' | LC_ALL=C sort -u | paste -sd, -)")
    fi
    # a run bench will not report (still going, or started and stopped) is left out after bench's one-line reason
    python -m bench report "${runs[@]}" --groups "$TABLES" --ci --out "$dest/leaderboard.md" \
        --out "$dest/leaderboard.csv" "${figures[@]}" "${order[@]}" "${EXTRA[@]}" \
        || { echo "skip: $name (bench report's reason above)"; return 0; }
    python -m bench report "$dest/leaderboard.csv" --out "$dest/leaderboard.tex"
    # the plots drawn from rows alone: severity curves, every method (not cost: chunks ran beside each other and
    # other jobs, so their epoch times are not comparable; results/README.md names the cost run)
    if [ ${#runs[@]} -gt 1 ]; then
        python -m bench report "${runs[@]}" --groups occlusion,adversarial --plots "$dest/plots" "${order[@]}" \
            "${EXTRA[@]}" > /dev/null || echo "skip: $name's severity plots (bench report's reason above)"
    fi
    # failure prediction, the whole guarantees view on the in-distribution test set, and coverage under shift (one
    # column per family of shifted sets: the whole view would be a table per set, 36 of them)
    local id_set
    id_set=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['datasets'][0])" \
        "${runs[0]}/manifest.json")
    python -m bench report "${runs[@]}" --groups failure,guarantees --sets "$id_set" --out "$dest/guarantees.md" \
        --out "$dest/guarantees.csv" "${order[@]}" "${EXTRA[@]}"
    python -m bench report "${runs[@]}" --groups coverage --out "$dest/coverage.md" --out "$dest/coverage.csv" \
        "${order[@]}" "${EXTRA[@]}"
    if [ ${#runs[@]} -eq 1 ]; then
        python -m bench report "${runs[@]}" --groups id,ood-near,ood-far --versus msp --out "$dest/versus-msp.md" \
            "${EXTRA[@]}"
    fi
    python tools/dagger_count.py "$dest/leaderboard.csv" --groups '*' > "$dest/daggers.txt"
    {
    # chunks that ran on other machines: were they scored on the same MNIST-C images? (tools/bank_chunk.py)
    [ ${#runs[@]} -eq 1 ] || { python tools/bank_chunk.py --check "${runs[@]}" || true; echo; }
    for c in "${runs[@]}"; do
        [ ${#runs[@]} -eq 1 ] || printf '## %s\n\n' "$(basename "$c")"
        python tools/grid_timeline.py "$c"
        [ ${#runs[@]} -eq 1 ] || echo
    done
    } > "$dest/timeline.md"
}

world mnist "$RESULTS"
world fashion "$RESULTS/fashion"
if [ -f "$RESULTS/fashion/leaderboard.csv" ]; then
    python tools/compare_worlds.py "$RESULTS/leaderboard.csv" "$RESULTS/fashion/leaderboard.csv" \
        --names MNIST,Fashion-MNIST > "$RESULTS/worlds.md"
fi
echo "wrote $RESULTS"
