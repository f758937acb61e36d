# mk/zmq.mk - the ZeroMQ publisher of KV events (lib/publisher.c,
# include/kvblock/publisher.h) and its end-to-end check.
#
#   ZMQ=auto (default)  built when zmq.h and msgpack.h (libzmq3-dev, libmsgpack-dev)
#                       are installed
#   ZMQ=1               built (fails if they are missing)
#   ZMQ=0               not built: kvb_publisher_create() is -ENOTSUP
#
# lib/publisher.c is always compiled (the functions always exist); with ZMQ=1
# it gets -DKVB_HAVE_ZMQ and the library links libzmq and msgpack-c.
#
#   make check-zmq      a real subscriber (Python: python3-zmq, python3-msgpack)
#                       rebuilds both tiers' indexes from kvb-offload-demo's live
#                       event stream, recovering a simulated gap and the slow-joiner
#                       loss through the replay socket; skipped with a message when
#                       zmq or the Python modules are missing.

ZMQ ?= auto
ZMQ_PYTHON ?= /usr/bin/python3

ifeq ($(ZMQ),auto)
ifneq ($(and $(wildcard /usr/include/zmq.h),$(wildcard /usr/include/msgpack.h)),)
override ZMQ := 1
else
override ZMQ := 0
endif
endif

ifeq ($(ZMQ),1)
CPPFLAGS   += -DKVB_HAVE_ZMQ
LDLIBS_LIB += $(shell pkg-config --libs libzmq msgpack 2>/dev/null || echo -lzmq -lmsgpackc)
endif

CHECKS += check-zmq
.PHONY: check-zmq

ifeq ($(ZMQ),1)
check-zmq: $(BUILD)/tools/kvb-offload-demo $(BUILD)/tools/kvb-replay
	@if ! $(ZMQ_PYTHON) -c 'import zmq, msgpack' 2>/dev/null; then \
	    echo "check-zmq: SKIPPED ($(ZMQ_PYTHON) with the zmq and msgpack modules not found;" \
	         "apt-get install python3-zmq python3-msgpack)"; \
	else \
	    timeout 300 $(ZMQ_PYTHON) tests/test_publisher_consumer.py --transport ipc \
	        --demo $(BUILD)/tools/kvb-offload-demo && \
	    timeout 300 $(ZMQ_PYTHON) tests/test_publisher_consumer.py --transport tcp \
	        --demo $(BUILD)/tools/kvb-offload-demo && \
	    timeout 200 $(ZMQ_PYTHON) tests/test_replay_publish.py $(BUILD)/tools/kvb-replay; \
	fi
else
check-zmq:
	@echo "check-zmq: SKIPPED (kvblock built without ZeroMQ: apt-get install libzmq3-dev libmsgpack-dev)"
endif
