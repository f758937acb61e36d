# mk/replay.mk - the replay lab (tools/kvb-replay, docs/replay.md).
#
# kvb-replay runs the eviction backends the library lists itself
# (kvb_inactive_policy in include/kvblock/inactive.h): nothing is generated here.
#
# `make check-replay` (part of `make check`): kvb-replay against an
# independent simulator (tools/sim_reference.py, standard library only) on the
# traces of ../shared/data, hit for hit: LRU, FIFO and the optimal reference on
# every LIRS trace at several capacities and on cloudphysics, plus the prefix
# replay of the Mooncake synthetic trace; the optimal reference against an
# exhaustive search on small random traces; and kvb-replay --api acquire against
# --api calls on the Mooncake conversation trace, every pool policy at two
# capacities (kvb_pool_acquire must give the four calls' hits and evictions).
# Skipped, with a message, when ../shared/data or python3 is absent. About 50 s.

# Keep the tools' common objects (make would delete them as intermediates).
.SECONDARY: $(TOOL_COMMON:%.c=$(BUILD)/obj/%.o)

CHECKS += check-replay
.PHONY: check-replay

check-replay: $(BUILD)/tools/kvb-replay
	@KVB_REPLAY=$(BUILD)/tools/kvb-replay tests/replay/check.sh
