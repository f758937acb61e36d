#!/usr/bin/env bash
# perf/perf-check.sh - compare callgrind instruction counts per block with the
# committed budget (make perf-check).
#
#   perf/perf-check.sh BENCH [BUDGET]      (BUDGET defaults to perf/budget.txt)
#
# For every operation in the budget: more than PERF_TOLERANCE percent (default
# 10) above budget fails; more than PERF_TOLERANCE percent below prints a note
# suggesting a lower budget (perf/update-budget.sh, a deliberate, reviewed
# commit). An operation measured but absent from the budget, or budgeted but no
# longer measured, gives a note (not a failure: a new backend needs its budget
# written once). The speed-of-light baseline's counts are shown for scale.
#
# Exit status: 0 within budget, 1 over budget or error.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ $# -lt 1 ]; then
    echo "usage: perf/perf-check.sh BENCH [BUDGET]" >&2
    exit 1
fi
bench=$1
budget=${2:-$here/budget.txt}
tol=${PERF_TOLERANCE:-10}
if [ ! -f "$budget" ]; then
    echo "perf-check: no budget file $budget (write one with perf/update-budget.sh)" >&2
    exit 1
fi

# The budget is only comparable for the compiler it was measured with.
want_cc=$(sed -n 's/^# compiler: //p' "$budget" | head -n 1)
have_cc=$("${PERF_CC:-gcc}" --version 2>/dev/null | head -n 1 || true)
if [ -n "$want_cc" ] && [ "$want_cc" != "$have_cc" ]; then
    echo "perf-check: note: the budget was measured with '$want_cc', this build uses '$have_cc';"
    echo "perf-check: note: instruction counts differ between compilers, expect deviations"
fi

measured=$(mktemp "${TMPDIR:-/tmp}/kvb-perf-measured.XXXXXX")
trap 'rm -f "$measured"' EXIT
start=$(date +%s)
"$here/measure.sh" "$bench" >"$measured"
secs=$(( $(date +%s) - start ))

awk -v tol="$tol" -v budget_file="$budget" -v secs="$secs" '
    FNR == NR {                       # the budget file
        if ($0 ~ /^[ \t]*(#|$)/) next
        budget[$1] = $2; order[++nb] = $1
        next
    }
    {                                 # measured: name ipb total blocks
        got[$1] = $2
        if ($1 ~ /^sol:/) { sol[$1] = $2; next }
        if (!($1 in budget)) newops[++nn] = $1
    }
    END {
        fail = 0; low = 0
        printf "perf-check: callgrind instructions per block, budget %s (+-%s%%), measured in %ss\n",
               budget_file, tol, secs
        printf "%-28s %10s %10s %8s %9s  %s\n", "operation", "budget", "measured", "change", "x sol", "verdict"
        for (i = 1; i <= nb; i++) {
            op = order[i]; b = budget[op]
            if (!(op in got)) { printf "%-28s %10.1f %10s %8s %9s  %s\n", op, b, "-", "", "", "note: not measured any more"; continue }
            m = got[op]
            ch = b > 0 ? 100.0 * (m - b) / b : 0
            # scale against the baseline of the same operation and batch
            split(op, parts, "/")
            key = "sol:" parts[1] "/" parts[3]
            xs = (key in sol && sol[key] > 0) ? sprintf("%.2f", m / sol[key]) : "-"
            if (m > b * (1 + tol / 100.0)) {
                verdict = "FAIL: over budget"; fail++
            } else if (m < b * (1 - tol / 100.0)) {
                verdict = "note: well under budget"; low++
            } else {
                verdict = "ok"
            }
            printf "%-28s %10.1f %10.1f %+7.1f%% %9s  %s\n", op, b, m, ch, xs, verdict
        }
        for (i = 1; i <= nn; i++)
            printf "%-28s %10s %10.1f %8s %9s  %s\n", newops[i], "-", got[newops[i]], "", "", "note: no budget yet"
        if (nn)
            printf "perf-check: note: %d operation(s) have no budget: add them with perf/update-budget.sh\n", nn
        if (low)
            printf "perf-check: note: %d operation(s) are more than %s%% under budget: consider lowering the budget\n" \
                   "perf-check: note: (perf/update-budget.sh, then review and commit perf/budget.txt)\n", low, tol
        if (fail) {
            printf "perf-check: FAILED: %d operation(s) more than %s%% over their instruction budget.\n", fail, tol
            printf "perf-check: profile with: valgrind --tool=callgrind --instr-atstart=no <kvb-bench> --callgrind-ops --op <op> --policy <policy> --batch <n>\n"
            printf "perf-check: then callgrind_annotate on the dump. If the increase is intended, run\n"
            printf "perf-check: perf/update-budget.sh and commit perf/budget.txt with the reason.\n"
            exit 1
        }
        printf "perf-check: OK (%d operations within budget)\n", nb
    }' "$budget" "$measured"
