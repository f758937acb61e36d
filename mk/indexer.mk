# mk/indexer.mk - kvb-indexer, the fleet index daemon (tools/kvb-indexer.c and
# its parts tools/kvb-indexer/*.c, FLEET.md section 7), and its end-to-end
# suite (tests/fleet/).
#
# The tool is built by the Makefile's tools/% pattern rule; this file adds
# libmicrohttpd and jansson to that one target (target-specific, `private` so
# that the library objects it depends on are not compiled with them) and their
# compiler flags to its parts, $(BUILD)/obj/tools/kvb-indexer/*.o. When
# pkg-config finds no libmicrohttpd or jansson (Debian: libmicrohttpd-dev,
# libjansson-dev), or the fleet index sources (lib/index*.c, lib/subscriber*.c)
# are not in the tree, tools/kvb-indexer.c is left out of TOOL_SRCS with a
# message and everything else still builds.
#
#   make check-indexer  tests/fleet/test_indexer.py against $(BUILD): Python
#                       publishers (vLLM wire format, map and array layouts, ipc and
#                       tcp) and kvb-offload-demo feeding the daemon; gaps, replays,
#                       restarts, clears, silence, killed publishers, malformed
#                       batches, bad HTTP requests, snapshots, SIGTERM, healthz,
#                       metrics; every answer compared with the truth. Skipped with
#                       a message when the daemon is not built, kvblock has no
#                       ZeroMQ, or $(INDEXER_PYTHON) lacks zmq, msgpack or xxhash
#                       (python3-zmq, python3-msgpack, python3-xxhash). In CHECKS.
#   make check-indexer-redis
#                       tests/fleet/test_indexer_redis.py against $(BUILD): the daemon
#                       with --redis URL --role relay|replica (FLEET.md section 8) on
#                       its own redis-server (free loopback port, temporary directory,
#                       AOF on): relay + standby + two replicas, answers equal the
#                       truth after kill -9 of the active relay mid-stream, a replica's
#                       kill -9 and cold start, SIGSTOP of redis-server past the lease
#                       (replicas lagging, still serving), SIGSTOP of the active relay
#                       (fenced: exit 3, no append after the new incarnation). The
#                       relay and replica come from libkvblock (lib/redis*.c), linked
#                       with -lhiredis through LDLIBS_LIB (mk/redis.mk). Skipped with a
#                       message like check-indexer, and when redis-server is missing or
#                       kvblock was built without hiredis (REDIS=0). In CHECKS.
#   make bench-indexer  tests/fleet/http_bench.py: HTTP round trip of /v1/match
#                       (64-block requests) on loopback, p50/p99
#                       (INDEXER_BENCH_ARGS="--requests 50000 ...").

INDEXER_PYTHON ?= /usr/bin/python3
INDEXER_BENCH_ARGS ?=
INDEXER_PKGS := libmicrohttpd jansson
INDEXER := $(BUILD)/tools/kvb-indexer

INDEXER_WHY :=
ifneq ($(shell pkg-config --exists $(INDEXER_PKGS) 2>/dev/null && echo yes),yes)
INDEXER_WHY := pkg-config finds no libmicrohttpd or jansson (apt-get install libmicrohttpd-dev libjansson-dev)
else ifeq ($(and $(wildcard lib/index*.c),$(wildcard lib/subscriber*.c)),)
INDEXER_WHY := the fleet index (lib/index*.c, lib/subscriber*.c) is not in this tree yet
endif

ifneq ($(INDEXER_WHY),)
ifneq ($(filter tools/kvb-indexer.c,$(TOOL_SRCS)),)
ifeq ($(MAKE_RESTARTS),)
$(info kvb-indexer: not built: $(INDEXER_WHY))
endif
endif
TOOL_SRCS := $(filter-out tools/kvb-indexer.c,$(TOOL_SRCS))
else
INDEXER_CFLAGS := $(shell pkg-config --cflags $(INDEXER_PKGS))
INDEXER_LIBS := $(shell pkg-config --libs $(INDEXER_PKGS))
$(INDEXER): private CPPFLAGS += $(INDEXER_CFLAGS)
$(INDEXER): private LDLIBS_TOOL += $(INDEXER_LIBS)
$(BUILD)/obj/tools/kvb-indexer/%.o: CPPFLAGS += $(INDEXER_CFLAGS)
endif

CHECKS += check-indexer check-indexer-redis
.PHONY: check-indexer check-indexer-redis bench-indexer

ifeq ($(INDEXER_WHY),)
check-indexer: $(INDEXER) $(BUILD)/tools/kvb-offload-demo
	@if ! $(INDEXER_PYTHON) -c 'import zmq, msgpack, xxhash' 2>/dev/null; then \
	    echo "check-indexer: SKIPPED ($(INDEXER_PYTHON) with the zmq, msgpack and xxhash" \
	         "modules not found; apt-get install python3-zmq python3-msgpack python3-xxhash)"; \
	elif [ "$(ZMQ)" != 1 ]; then \
	    echo "check-indexer: SKIPPED (kvblock built without ZeroMQ: the daemon has no subscriber)"; \
	else \
	    timeout 600 $(INDEXER_PYTHON) tests/fleet/test_indexer.py --build $(BUILD); \
	fi

check-indexer-redis: $(INDEXER)
	@if ! $(INDEXER_PYTHON) -c 'import zmq, msgpack, xxhash' 2>/dev/null; then \
	    echo "check-indexer-redis: SKIPPED ($(INDEXER_PYTHON) with the zmq, msgpack and" \
	         "xxhash modules not found; apt-get install python3-zmq python3-msgpack python3-xxhash)"; \
	elif [ "$(ZMQ)" != 1 ]; then \
	    echo "check-indexer-redis: SKIPPED (kvblock built without ZeroMQ: the relay has no subscriber)"; \
	elif [ "$(REDIS)" != 1 ]; then \
	    echo "check-indexer-redis: SKIPPED (kvblock built without hiredis: apt-get install libhiredis-dev)"; \
	elif ! command -v $(or $(REDIS_SERVER),redis-server) >/dev/null 2>&1; then \
	    echo "check-indexer-redis: SKIPPED (redis-server not found: apt-get install redis-server)"; \
	else \
	    timeout 300 $(INDEXER_PYTHON) tests/fleet/test_indexer_redis.py --build $(BUILD) \
	        --redis-server $(or $(REDIS_SERVER),redis-server); \
	fi

bench-indexer: $(INDEXER)
	@$(INDEXER_PYTHON) tests/fleet/http_bench.py --build $(BUILD) $(INDEXER_BENCH_ARGS)
else
check-indexer check-indexer-redis bench-indexer:
	@echo "$@: SKIPPED (kvb-indexer not built: $(INDEXER_WHY))"
endif
