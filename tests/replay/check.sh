#!/bin/sh
# tests/replay/check.sh - run by `make check-replay` (mk/replay.mk): the replay
# lab's checks (tests/replay/check_replay.py) when python3 is there, a message
# otherwise. KVB_REPLAY names the kvb-replay binary to check.
if ! command -v python3 >/dev/null 2>&1; then
    echo "check-replay: SKIPPED: python3 not found (tools/sim_reference.py needs it)"
    exit 0
fi
exec python3 "$(dirname "$0")/check_replay.py" --replay "${KVB_REPLAY:-build/tools/kvb-replay}"
