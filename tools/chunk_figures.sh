#!/usr/bin/env bash
# The figures of one finished chunk of a leaderboard world (tools/leaderboard_chunks.txt), drawn while its per-image
# predictions are still on disk (tools/bank_chunk.py keeps the rows, not the predictions):
#
#   bash tools/chunk_figures.sh OUT_DIR/fashion-a results/fashion
#
# writes DEST/plots/<chunk>/ (the plots drawn from predictions: risk-coverage, reliability, confidence on each OOD
# set, the chunk's methods only; tools/leaderboard_reports.sh draws the severity and cost plots from the rows) and,
# for the chunk that holds msp and the methods scoring its network, DEST/versus-msp.md (the image-level test of
# bench report --versus msp; the methods of other chunks train networks of their own and are never compared).
set -eu
RUN=${1:?usage: bash tools/chunk_figures.sh RUN DEST}
DEST=${2:?usage: bash tools/chunk_figures.sh RUN DEST}
cd "$(dirname "$0")/.."
chunk=${RUN##*-}
[ -d "$RUN/predictions" ] || { echo "$RUN has no predictions (a banked chunk): run the chunk again to draw them"; exit 2; }
python -m bench report "$RUN" --groups 'id,ood-*' --plots "$DEST/plots/$chunk" > /dev/null
if [ -n "$(ls "$RUN/cells" | grep -m1 '^msp__')" ]; then
    python -m bench report "$RUN" --groups id,ood-near,ood-far --versus msp --out "$DEST/versus-msp.md"
fi
echo "wrote $DEST/plots/$chunk"
