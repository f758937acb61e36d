# mk/redis.mk - router replicas on Redis (include/kvblock/redis.h, lib/redis*.c,
# FLEET.md section 8): the relay, the replica, the log entry encoding.
#
#   REDIS=auto (default)  built with hiredis when `pkg-config hiredis` finds it
#                         (Debian: libhiredis-dev)
#   REDIS=1               built with hiredis (fails if it is missing)
#   REDIS=0               not built: every relay/replica function is -ENOTSUP
#                         (the entry encoding always works)
#
# lib/redis*.c are always compiled; with hiredis they get -DKVB_HAVE_REDIS and the
# library links -lhiredis.
#
#   make check-redis   (in CHECKS) tests/redis/run.py: starts its own redis-server
#                      (free loopback port, temporary directory, AOF on), scripted
#                      vLLM-format publishers (python3-zmq, python3-msgpack; three
#                      with router hashes, one vLLM worker with engine hashes and
#                      token ids), two relays and two replicas
#                      (tools/kvb-redis-node), and runs the fault scenarios: 1 relay
#                      kill -9, 2 replica kill -9 + cold start, 3 redis-server kill -9
#                      + AOF restart, 4 SIGSTOP of Redis past the lease, 5 SIGSTOP of
#                      the active relay past its lease (split brain, checked in the
#                      streams), 6 Redis restarted from an older AOF (lost entries
#                      appended again from the relay's retention), 7 the same without
#                      retention (clears), 8 a worker dies (stale) and restarts; each
#                      checks the relay's and the replicas' answers against the
#                      publishers' ground truth (about 70 s). Skipped with a message
#                      when redis-server, hiredis, ZeroMQ, the fleet index or the
#                      Python modules are missing. REDIS_SCENARIOS="1 3" runs a
#                      subset.
#   make bench-redis   tools/kvb-redis-bench: replica cold start (snapshot + stream
#                      tail) for 2.28 M events from 7 workers, steady-state lag of a
#                      replica behind the relay at 1 M events/s offered, lookups/s
#                      of a replica while it ingests; each next to a same-run
#                      baseline without Redis, with the CPU seconds of every part
#                      (subscriber side, relay thread, redis-server, replica thread)
#                      so that a loaded machine's wall times can be read
#                      (REDIS_BENCH_ARGS="--quick", "--rate 200000", ...). Starts its
#                      own redis-server (AOF on, everysec) in a temporary directory.

REDIS ?= auto
REDIS_SERVER ?= redis-server
REDIS_PYTHON ?= /usr/bin/python3
REDIS_SCENARIOS ?=
REDIS_BENCH_ARGS ?=

ifeq ($(REDIS),auto)
ifneq ($(shell pkg-config --exists hiredis 2>/dev/null && echo yes),)
override REDIS := 1
else
override REDIS := 0
endif
endif

ifeq ($(REDIS),1)
CPPFLAGS   += -DKVB_HAVE_REDIS
LDLIBS_LIB += $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis)
endif

# The node and bench tools need the fleet index and the subscriber.
REDIS_TOOLS := tools/kvb-redis-node.c tools/kvb-redis-bench.c
REDIS_WHY :=
ifeq ($(wildcard lib/index*.c),)
REDIS_WHY := the fleet index (lib/index*.c) is not in this tree yet
endif
ifneq ($(REDIS_WHY),)
TOOL_SRCS := $(filter-out $(REDIS_TOOLS),$(TOOL_SRCS))
endif

CHECKS += check-redis
.PHONY: check-redis bench-redis

check-redis:
	@if [ -n "$(REDIS_WHY)" ]; then \
	    echo "check-redis: SKIPPED ($(REDIS_WHY))"; \
	elif [ "$(REDIS)" != 1 ]; then \
	    echo "check-redis: SKIPPED (kvblock built without hiredis: apt-get install libhiredis-dev)"; \
	elif ! command -v $(REDIS_SERVER) >/dev/null 2>&1; then \
	    echo "check-redis: SKIPPED ($(REDIS_SERVER) not found: apt-get install redis-server)"; \
	elif [ "$(ZMQ)" != 1 ]; then \
	    echo "check-redis: SKIPPED (kvblock built without ZeroMQ: the relay needs the subscriber)"; \
	elif ! $(REDIS_PYTHON) -c 'import zmq, msgpack' 2>/dev/null; then \
	    echo "check-redis: SKIPPED ($(REDIS_PYTHON) lacks zmq or msgpack:" \
	         "apt-get install python3-zmq python3-msgpack)"; \
	else \
	    $(MAKE) --no-print-directory BUILD=$(BUILD) $(BUILD)/tools/kvb-redis-node && \
	    timeout 280 $(REDIS_PYTHON) tests/redis/run.py --node $(BUILD)/tools/kvb-redis-node \
	        --redis-server $(REDIS_SERVER) $(if $(REDIS_SCENARIOS),--scenarios $(REDIS_SCENARIOS)); \
	fi

bench-redis:
	@if [ -n "$(REDIS_WHY)" ]; then echo "bench-redis: SKIPPED ($(REDIS_WHY))"; \
	elif [ "$(REDIS)" != 1 ]; then echo "bench-redis: SKIPPED (built without hiredis)"; \
	elif ! command -v $(REDIS_SERVER) >/dev/null 2>&1; then \
	    echo "bench-redis: SKIPPED ($(REDIS_SERVER) not found)"; \
	else \
	    $(MAKE) --no-print-directory BUILD=$(BUILD) $(BUILD)/tools/kvb-redis-bench && \
	    $(BUILD)/tools/kvb-redis-bench --redis-server $(REDIS_SERVER) $(REDIS_BENCH_ARGS); \
	fi
