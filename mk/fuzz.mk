# mk/fuzz.mk - libFuzzer targets (fuzz/fuzz_*.c): fuzz_pool (pool API programs
# against a reference model), fuzz_wire (raw KV-event payloads through
# kvb_index_decode, needs msgpack-c: without it the target only checks -ENOTSUP).
# FUZZ_NAMES=fuzz_wire on the command line runs one target.
#
#   make fuzz            build, then run each target for FUZZ_SECONDS (default 60) on
#                        its committed corpus (fuzz/corpus/<target>/, read-only) plus a
#                        scratch corpus in $(FUZZ_BUILD)/corpus-<target>/ where new
#                        inputs go; prints libFuzzer's final stats (executions).
#   make fuzz-regress    run every committed corpus input once (CI; a few seconds).
#   make fuzz-replay     the same inputs through a plain build (FUZZ_REPLAY_CC, default
#                        cc; fuzz/replay_main.c instead of libFuzzer) with ASan+UBSan:
#                        for a machine without clang's fuzzer runtime.
#   make fuzz-merge      minimise the scratch corpus into the committed one
#                        (libFuzzer -merge=1 -use_counters=0: one input per new edge,
#                        so the committed corpus stays small; review and commit it).
#
# A target is fuzz/fuzz_NAME.c; the other fuzz/*.c files (the pool target's reference
# model, fuzz/pool_model.c) and the helpers shared with the tests (tests/support/*.c,
# included as "support/NAME.h") are archived and linked into every target, which
# takes what it uses; fuzz/replay_main.c is the replay builds' main().
#
# FUZZ_CC (default clang) needs libFuzzer (Debian: libclang-rt-14-dev). The library
# is compiled again, with -DKVB_TESTING (test hooks, debug assertions) and
# -fsanitize=fuzzer-no-link,address,undefined, into $(FUZZ_BUILD) (default
# build-fuzz). A crash, a sanitizer report or a model mismatch stops the run and
# leaves the input in $(FUZZ_BUILD)/crash-*; replay it with
#   $(FUZZ_BUILD)/fuzz_pool $(FUZZ_BUILD)/crash-<sha1>
# and keep it in fuzz/corpus/<target>/ once fixed.

FUZZ_CC       ?= clang
FUZZ_BUILD    ?= build-fuzz
FUZZ_SECONDS  ?= 60
FUZZ_ARGS     ?=
FUZZ_REPLAY_CC ?= cc
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   := -std=c11 -g -O1 $(WARN) $(FUZZ_SAN)

FUZZ_SRCS     := $(wildcard fuzz/fuzz_*.c)
FUZZ_NAMES    := $(FUZZ_SRCS:fuzz/%.c=%)
FUZZ_MAIN     := fuzz/replay_main.c
FUZZ_HELPERS  := $(filter-out $(FUZZ_SRCS) $(FUZZ_MAIN),$(wildcard fuzz/*.c)) \
                 $(wildcard tests/support/*.c)
FUZZ_HDRS     := $(wildcard fuzz/*.h tests/support/*.h)
FUZZ_BINS     := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/%)
FUZZ_REPLAYS  := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/replay/%)
# the pool core only: what the targets link (no device front end or backends, no Vulkan)
FUZZ_LIB_SRCS := $(filter-out lib/device.c,$(wildcard lib/*.c backends/inactive/*.c))
FUZZ_OBJS     := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_ROBJS    := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_BUILD)/robj/%.o)
FUZZ_HOBJS    := $(FUZZ_HELPERS:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_HROBJS   := $(FUZZ_HELPERS:%.c=$(FUZZ_BUILD)/robj/%.o)
# msgpack-c and libzmq when the library is built with them (mk/zmq.mk, included
# after this file: hence the deferred expansion): fuzz_wire decodes with msgpack-c.
FUZZ_ZMQ_LIBS  = $(if $(filter 1,$(ZMQ)),-lmsgpackc -lzmq)
FUZZ_LIBS      = -lxxhash -lpthread -lm $(FUZZ_ZMQ_LIBS)

.PHONY: fuzz fuzz-regress fuzz-replay fuzz-merge fuzz-bins

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -DKVB_TESTING $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
	    -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libkvblock_fuzz.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/libfuzz_helpers.a: $(FUZZ_HOBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_BUILD)/libfuzz_helpers.a \
        $(FUZZ_BUILD)/libkvblock_fuzz.a $(FUZZ_HDRS)
	$(FUZZ_CC) $(CPPFLAGS) -DKVB_TESTING -Itests $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ \
	    $(FUZZ_BUILD)/libfuzz_helpers.a $(FUZZ_BUILD)/libkvblock_fuzz.a $(FUZZ_LIBS)

$(FUZZ_BUILD)/robj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_REPLAY_CC) $(CPPFLAGS) -DKVB_TESTING $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libkvblock_replay.a: $(FUZZ_ROBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/libfuzz_helpers_replay.a: $(FUZZ_HROBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/replay/fuzz_%: fuzz/fuzz_%.c $(FUZZ_BUILD)/robj/fuzz/replay_main.o \
        $(FUZZ_BUILD)/libfuzz_helpers_replay.a $(FUZZ_BUILD)/libkvblock_replay.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_REPLAY_CC) $(CPPFLAGS) -DKVB_TESTING -Itests $(FUZZ_CFLAGS) $< \
	    $(FUZZ_BUILD)/robj/fuzz/replay_main.o -o $@ $(FUZZ_BUILD)/libfuzz_helpers_replay.a \
	    $(FUZZ_BUILD)/libkvblock_replay.a $(FUZZ_LIBS)

fuzz-bins: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	@for t in $(FUZZ_NAMES); do \
	    mkdir -p $(FUZZ_BUILD)/corpus-$$t; \
	    echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	    (cd $(FUZZ_BUILD) && ./$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -timeout=10 -rss_limit_mb=2048 $(FUZZ_ARGS) \
	        corpus-$$t $(CURDIR)/fuzz/corpus/$$t) || exit 1; \
	done

fuzz-regress: $(FUZZ_BINS)
	@for t in $(FUZZ_NAMES); do \
	    echo "== fuzz-regress $$t: $$(ls fuzz/corpus/$$t | wc -l) inputs"; \
	    $(FUZZ_BUILD)/$$t -runs=0 -timeout=10 fuzz/corpus/$$t || exit 1; \
	done

fuzz-replay: $(FUZZ_REPLAYS)
	@for t in $(FUZZ_NAMES); do \
	    $(FUZZ_BUILD)/replay/$$t fuzz/corpus/$$t/* || exit 1; \
	done

fuzz-merge: $(FUZZ_BINS)
	@for t in $(FUZZ_NAMES); do \
	    $(FUZZ_BUILD)/$$t -merge=1 -use_counters=0 fuzz/corpus/$$t $(FUZZ_BUILD)/corpus-$$t \
	        || exit 1; \
	done

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
