#!/bin/sh
# tests/replay/measure.sh - rerun every measurement quoted in docs/replay.md.
#
#   tests/replay/measure.sh [OUTDIR]      (default /tmp/kvb-replay-tables)
#
# Builds kvb-replay in build-lab (make BUILD=build-lab tools), then writes one
# text file per table into OUTDIR and the plots (SVG) next to them; the figure
# committed as docs/hit-ratio.svg is OUTDIR/conversation.svg. Traces are read
# in place from ../shared/data. Takes a few minutes (--repeat 5 for timings).
set -eu
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/kvb-replay-tables}
DATA=${KVB_DATA:-../shared/data}
R=build-lab/tools/kvb-replay
mkdir -p "$OUT"
make -s BUILD=build-lab tools >/dev/null

MC=$DATA/mooncake
run() { name=$1; shift; echo "== $name: kvb-replay $*"; $R "$@" > "$OUT/$name.txt" 2>&1; }

run conversation --trace $MC/mooncake_conversation_trace.jsonl --policy all --repeat 7 \
    --plot "$OUT/conversation.svg"
run synthetic --trace $MC/mooncake_synthetic_trace.jsonl --policy all --repeat 7 \
    --plot "$OUT/synthetic.svg"
run conversation-window32 --trace $MC/mooncake_conversation_trace.jsonl --policy all --window 32
run synthetic-window32 --trace $MC/mooncake_synthetic_trace.jsonl --policy all --window 32
run builtin --policy all --repeat 3
run throughput --trace $MC/mooncake_conversation_trace.jsonl --policy lru,fifo \
    --capacities 1000,8000,32000 --repeat 10
for t in 2_pools cpp cs gli loop multi1 multi2 multi3 ps sprite; do
    run lirs-$t --trace $DATA/lirs/$t.trace --format ids --policy all \
        --capacities 100,500,1000,2000,5000 --repeat 3
done
run cloudphysics --trace $DATA/cloudphysics/cloudPhysicsIO.txt --format ids --policy all \
    --capacities 1000,2000,5000,10000,20000,50000 --repeat 3 --plot "$OUT/cloudphysics.svg"
echo "results in $OUT"
