# mk/bench.mk - benchmarks and the instruction-count budget (issue 7).
#
#   make bench            tools/kvb-bench: micro benchmarks next to a same-binary
#                         speed-of-light baseline, thread scaling with lock
#                         counters, bookkeeping bytes per block
#                         (BENCH_ARGS="--quick", "--csv", "--blocks 1M --batch 16
#                         --policy lru --op lifecycle", ...)
#   make bench-quick      the CI-sized run (kvb-bench --quick)
#   make perf-check       callgrind instructions per block of every kvb-bench
#                         operation vs perf/budget.txt: > 10% over fails, > 10%
#                         under suggests lowering the budget. Deterministic (no
#                         wall time), < 2 minutes. Built in $(PERF_BUILD) with
#                         $(PERF_CC) -O2 so that the count matches the budget's
#                         compiler whatever BUILD and CC say.
#   make perf-budget      regenerate perf/budget.txt (review and commit it on its own)
#
# Wall-time numbers are never asserted (CONVENTIONS.md); the budget is in
# instructions, which do not drift with machine load.

BENCH_ARGS ?=
PERF_BUILD ?= build-perf
PERF_CC    ?= gcc

.PHONY: bench bench-quick perf-check perf-budget perf-bench-bin

bench: $(BUILD)/tools/kvb-bench
	$(BUILD)/tools/kvb-bench $(BENCH_ARGS)

bench-quick: $(BUILD)/tools/kvb-bench
	$(BUILD)/tools/kvb-bench --quick $(BENCH_ARGS)

perf-bench-bin:
	@command -v valgrind >/dev/null 2>&1 || { \
	    echo "perf-check: valgrind is not installed (Debian: apt-get install valgrind, or bash .ci/deps)" >&2; \
	    exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(PERF_BUILD) CC=$(PERF_CC) OPT=-O2 SAN= ANNOTATE= \
	    $(PERF_BUILD)/tools/kvb-bench

perf-check: perf-bench-bin
	@PERF_CC=$(PERF_CC) perf/perf-check.sh $(PERF_BUILD)/tools/kvb-bench perf/budget.txt

perf-budget: perf-bench-bin
	@PERF_CC=$(PERF_CC) perf/update-budget.sh $(PERF_BUILD)/tools/kvb-bench
