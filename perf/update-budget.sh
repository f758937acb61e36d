#!/usr/bin/env bash
# perf/update-budget.sh - regenerate perf/budget.txt from the current code
# (callgrind instructions per block of every kvb-bench operation).
#
#   perf/update-budget.sh [BENCH]
#
# Without BENCH it builds build-perf/tools/kvb-bench with the same settings as
# `make perf-check` (PERF_CC, default gcc; -O2). Updating the budget is a
# deliberate change: review the diff (git diff perf/budget.txt) and commit it
# on its own, saying why the numbers moved.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cc=${PERF_CC:-gcc}
build=${PERF_BUILD:-build-perf}

if [ $# -ge 1 ]; then
    bench=$1
else
    make -C "$root" --no-print-directory BUILD="$build" CC="$cc" OPT=-O2 SAN= ANNOTATE= \
        "$build/tools/kvb-bench" >/dev/null
    bench=$root/$build/tools/kvb-bench
fi

measured=$("$here/measure.sh" "$bench")
out=$here/budget.txt
{
    echo "# perf/budget.txt - callgrind instruction budget per block (make perf-check)"
    echo "#"
    echo "# One line per operation: <op>/<policy>/b<batch> <instructions per block>, as"
    echo "# measured by perf/measure.sh (valgrind --tool=callgrind, kvb-bench --callgrind-ops:"
    echo "# a 4096-block pool, 2048 blocks per operation, after a warm-up). make perf-check"
    echo "# fails above budget + 10% and suggests lowering it below budget - 10%."
    echo "# Regenerate with perf/update-budget.sh and commit the change on its own, with the"
    echo "# reason the numbers moved."
    echo "#"
    echo "# compiler: $("$cc" --version | head -n 1)"
    echo "# generated: $(date -u +%Y-%m-%d) from $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet -- lib include backends 2>/dev/null || echo ' (library sources modified)')"
    echo "#"
    echo "$measured" | awk '$1 !~ /^sol:/ { printf "%-28s %10.1f\n", $1, $2 }'
    echo "#"
    echo "# for scale, the speed-of-light baseline (not checked):"
    echo "$measured" | awk '$1 ~ /^sol:/ { printf "# %-26s %10.1f\n", $1, $2 }'
} >"$out"
echo "wrote $out:"
grep -v '^#' "$out"
