#!/usr/bin/env bash
# Run Criterion test binaries, then print one aggregate line:
#   check: N passed, N failed
# Exit status is non-zero if any binary failed or crashed.
set -u
passed=0; failed=0; bad=0
for t in "$@"; do
    out=$("$t" --jobs 2 2>&1); rc=$?
    syn=$(printf '%s\n' "$out" | grep -E '^\[====\] Synthesis' | tail -n 1)
    if [ -z "$syn" ]; then
        printf '%s\n' "$out"; echo "$t: no Criterion synthesis line (rc=$rc)"; bad=1; continue
    fi
    p=$(printf '%s' "$syn" | sed -E 's/.*Passing: ([0-9]+).*/\1/')
    f=$(printf '%s' "$syn" | sed -E 's/.*Failing: ([0-9]+).*/\1/')
    c=$(printf '%s' "$syn" | sed -E 's/.*Crashing: ([0-9]+).*/\1/')
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ] || [ "$c" -ne 0 ]; then
        printf '%s\n' "$out" | grep -vE '^\[----\] Criterion|^\[====\] Running' | tail -n 60
        bad=1
    fi
    printf '%-40s %s\n' "$(basename "$t")" "${syn#\[====\] }"
done
echo "check: ${passed} passed, ${failed} failed"
exit $bad
