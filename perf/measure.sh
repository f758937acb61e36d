#!/usr/bin/env bash
# perf/measure.sh - instructions per block of every kvb-bench operation, counted
# by callgrind (deterministic: the same binary on the same input gives the same
# count on any load, unlike wall time).
#
#   perf/measure.sh BENCH [kvb-bench options...]
#
# Runs `valgrind --tool=callgrind --instr-atstart=no BENCH --callgrind-ops`:
# kvb-bench switches instrumentation on around each operation's timed region
# only and dumps the counters after it with a label
# "kvb-bench <op>/<policy>/b<batch> blocks=<count>" (or "sol:<op>/b<batch>" for
# the speed-of-light baseline). Prints one line per dump, sorted:
#
#   <name> <instructions per block> <instructions> <blocks>
#
# Exit status: 0 ok, 1 error (with a message on stderr).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: perf/measure.sh BENCH [kvb-bench options...]" >&2
    exit 1
fi
bench=$1
shift
if ! command -v valgrind >/dev/null 2>&1; then
    echo "perf/measure.sh: valgrind is not installed (Debian: apt-get install valgrind; or bash .ci/deps)" >&2
    exit 1
fi
if [ ! -x "$bench" ]; then
    echo "perf/measure.sh: $bench is not an executable (build it: make BUILD=... tools)" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvb-perf.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if ! valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" \
    "$bench" --callgrind-ops "$@" >"$tmp/stdout" 2>"$tmp/stderr"; then
    echo "perf/measure.sh: valgrind $bench --callgrind-ops failed:" >&2
    tail -n 20 "$tmp/stderr" >&2
    exit 1
fi

shopt -s nullglob
parts=("$tmp"/cg.out.*)
if [ ${#parts[@]} -eq 0 ]; then
    echo "perf/measure.sh: callgrind wrote no per-operation dumps (is $bench built with <valgrind/callgrind.h>?)" >&2
    exit 1
fi
for f in "${parts[@]}"; do
    awk '
        /^desc: Trigger: Client Request: kvb-bench / {
            sub(/^desc: Trigger: Client Request: kvb-bench /, "")
            name = $1
            for (i = 2; i <= NF; i++) if ($i ~ /^blocks=/) { blocks = substr($i, 8) }
        }
        /^totals:/ { total = $2 }
        END {
            if (name != "" && blocks > 0)
                printf "%s %.1f %d %d\n", name, total / blocks, total, blocks
        }' "$f"
done | sort
