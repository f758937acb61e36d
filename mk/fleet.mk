# mk/fleet.mk - the fleet simulator (tools/kvb-fleet.c) and the fleet index
# benchmarks (tools/kvb-index-bench.c, its sections in tools/kvb-index-bench/),
# FLEET.md sections 1, 5 and 10.
#
# Both tools are built by the Makefile's tools/% pattern rule against
# libkvblock.a. Until the fleet index sources (lib/index*.c, lib/subscriber*.c)
# are in the tree they are left out of TOOL_SRCS with a message, so that
# everything else still builds.
#
#   make bench-index   kvb-index-bench: (a) block ops/s on one core, (b) match
#                      latency with 1,000 workers and 64-block requests (alone and
#                      with a concurrent writer), (c) memory per (block, worker)
#                      entry at 10 M entries, (d) snapshot save/load and catch-up of
#                      2.28 M events, (e) Dynamo's mooncake_bench method; each next
#                      to a same-binary baseline (INDEX_BENCH_ARGS="--quick",
#                      "--only e", "--trace FILE", ...). Then, when
#                      $(BUILD)/tools/kvb-indexer exists, the daemon's HTTP round
#                      trip (make bench-indexer, mk/indexer.mk).
#   make check-fleet   CI-cheap smoke check (in CHECKS): kvb-fleet --quick --verify
#                      (every index prediction equals the pool's hit), kvb-index-bench
#                      --quick (runs, prints every section, its own correctness
#                      checks pass; no timing is asserted), and kvb-fleet over ZeroMQ
#                      ipc on a tiny workload, whose hit ratios must equal the
#                      in-process run's line for line (the subscriber is synced
#                      before each decision, so both make the same decisions).
#                      Skipped with a message when the fleet index is not built;
#                      the ZeroMQ part when kvblock has no ZeroMQ.

INDEX_BENCH_ARGS ?=
FLEET_TOOLS := tools/kvb-fleet.c tools/kvb-index-bench.c

FLEET_WHY :=
ifeq ($(and $(wildcard lib/index*.c),$(wildcard lib/subscriber*.c)),)
FLEET_WHY := the fleet index (lib/index*.c, lib/subscriber*.c) is not in this tree yet
endif

ifneq ($(FLEET_WHY),)
ifneq ($(filter $(FLEET_TOOLS),$(TOOL_SRCS)),)
$(info kvb-fleet, kvb-index-bench: not built: $(FLEET_WHY))
endif
TOOL_SRCS := $(filter-out $(FLEET_TOOLS),$(TOOL_SRCS))
endif

CHECKS += check-fleet
.PHONY: check-fleet bench-index

ifeq ($(FLEET_WHY),)
FLEET := $(BUILD)/tools/kvb-fleet
INDEX_BENCH := $(BUILD)/tools/kvb-index-bench

bench-index: $(INDEX_BENCH)
	$(INDEX_BENCH) $(INDEX_BENCH_ARGS)
	@if [ -x $(BUILD)/tools/kvb-indexer ]; then \
	    echo "== HTTP round trip of the daemon (make bench-indexer)"; \
	    $(MAKE) --no-print-directory bench-indexer || exit 1; \
	else \
	    echo "HTTP round trip: skipped ($(BUILD)/tools/kvb-indexer not built)"; \
	fi

# Columns of a kvb-fleet line that must not depend on the transport: policy,
# workers, blocks per worker, hit ratio, load balance, mean load, work balance,
# mispredictions, early releases (the timing columns 8-10 are left out).
FLEET_CMP_COLS := { print $$1, $$2, $$3, $$4, $$5, $$6, $$7, $$11, $$12 }

check-fleet: $(FLEET) $(INDEX_BENCH)
	@echo "== kvb-fleet --quick --verify"
	@out=$$(timeout 120 $(FLEET) --quick --verify) || { echo "$$out"; \
	    echo "check-fleet: kvb-fleet --quick failed"; exit 1; }; \
	echo "$$out"; \
	for p in round_robin least_loaded kv_aware one_pool; do \
	    echo "$$out" | grep -q "^$$p .*%" || { \
	        echo "check-fleet: no result line for $$p"; exit 1; }; \
	done; \
	echo "$$out" | awk '/%/ && $$4 ~ /%$$/ { v = $$4 + 0; if (v <= 0 || v > 100) bad = 1; n++ } \
	    END { exit (bad || n < 4) }' || { echo "check-fleet: hit ratios out of (0, 100]"; exit 1; }
	@echo "== kvb-index-bench --quick"
	@out=$$(timeout 300 $(INDEX_BENCH) --quick) || { echo "$$out"; \
	    echo "check-fleet: kvb-index-bench --quick failed"; exit 1; }; \
	echo "$$out"; \
	for s in '^(a)' '^(b)' '^(c)' '^(d)' '^(e)'; do \
	    echo "$$out" | grep -q "$$s" || { echo "check-fleet: no $$s line"; exit 1; }; \
	done; \
	echo "$$out" | grep -qiw 'nan\|inf' && { echo "check-fleet: a value is not finite"; exit 1; }; \
	true
	@if [ "$(ZMQ)" != 1 ]; then \
	    echo "check-fleet: zmq part SKIPPED (kvblock built without ZeroMQ)"; \
	else \
	    echo "== kvb-fleet over ZeroMQ ipc vs in process (tiny workload)"; \
	    a=$$(timeout 120 $(FLEET) --quick --requests 400 --quiet --verify) || exit 1; \
	    b=$$(timeout 300 $(FLEET) --quick --requests 400 --quiet --verify --transport zmq) || { \
	        echo "$$b"; echo "check-fleet: kvb-fleet --transport zmq failed"; exit 1; }; \
	    echo "$$b"; \
	    if [ "$$(echo "$$a" | awk '$(FLEET_CMP_COLS)')" != "$$(echo "$$b" | awk '$(FLEET_CMP_COLS)')" ]; then \
	        echo "in process:"; echo "$$a"; \
	        echo "check-fleet: the ZeroMQ run differs from the in-process run"; exit 1; \
	    fi; \
	    echo "check-fleet: ZeroMQ and in-process runs agree"; \
	fi
else
check-fleet bench-index:
	@echo "$@: SKIPPED (kvb-fleet, kvb-index-bench not built: $(FLEET_WHY))"
endif
