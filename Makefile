# kvblock - one entry point. Pattern rules only: a new lib/*.c, backends/*/*.c,
# tests/test_*.c, tests/support/*.c, stress/*.c or tools/*.c is picked up without
# editing this file.
# Optional components add themselves through mk/*.mk (e.g. mk/vulkan.mk).
#
#   make                 static + shared library, tools, tests, stress programs
#   make check           Criterion unit tests (+ other suites registered in CHECKS)
#   make stress          long torture runs (native, 10^7 operations each: 8 threads x 1.25M)
#   make helgrind|drd|tsan|asan|memcheck   torture (and tests where the tool allows)
#   make bench           benchmarks
#   make install PREFIX=/usr/local
#   make WERROR=1        warnings are errors (CI)
#   make BUILD=dir       out-of-tree build directory (default: build)

BUILD   ?= build
PREFIX  ?= /usr/local
CC      ?= cc
WERROR  ?= 0
OPT     ?= -O2
SAN     ?=
ANNOTATE ?=

VERSION      := 1.0.0
SOVERSION    := 1

# ---- flags -----------------------------------------------------------------
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN     += -Werror
endif
CPPFLAGS += -Iinclude -Ilib -D_GNU_SOURCE
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -fPIC -fvisibility=hidden $(WARN)
LDLIBS_LIB := -lxxhash -lpthread -lm
LDLIBS_TOOL := -Wl,--push-state,--no-as-needed -ljemalloc -Wl,--pop-state
CRITERION_LIBS := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

ifeq ($(SAN),tsan)
CFLAGS  += -fsanitize=thread -O1 -g
LDFLAGS += -fsanitize=thread
CPPFLAGS += -DKVB_ANNOTATE_TSAN
LDLIBS_TOOL :=
endif
ifeq ($(SAN),asan)
CFLAGS  += -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
LDLIBS_TOOL :=
endif
ifeq ($(ANNOTATE),valgrind)
CPPFLAGS += -DKVB_ANNOTATE_VALGRIND
LDLIBS_TOOL :=
endif

# ---- sources ---------------------------------------------------------------
LIB_SRCS    := $(wildcard lib/*.c backends/inactive/*.c backends/device/*.c)
TEST_SRCS   := $(wildcard tests/test_*.c)
STRESS_SRCS := $(wildcard stress/*.c)
# helpers shared by the tests, the torture programs and the fuzz targets
SUPPORT_SRCS := $(wildcard tests/support/*.c)
SUPPORT_HDRS := $(wildcard tests/support/*.h)
TOOL_SRCS   := $(wildcard tools/*.c)
TOOL_COMMON := $(wildcard tools/common/*.c)
CHECKS      := check-unit check-install

# optional components (vulkan, zmq, python, ...) append to the variables above
-include $(sort $(wildcard mk/*.mk))

LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
TLIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/tobj/%.o)
TOOL_COBJS := $(TOOL_COMMON:%.c=$(BUILD)/obj/%.o)
SUPPORT_OBJS := $(SUPPORT_SRCS:%.c=$(BUILD)/tobj/%.o)
TESTS      := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
STRESS     := $(STRESS_SRCS:stress/%.c=$(BUILD)/stress/%)
TOOLS      := $(TOOL_SRCS:tools/%.c=$(BUILD)/tools/%)

STATIC     := $(BUILD)/libkvblock.a
TSTATIC    := $(BUILD)/libkvblock_test.a
SUPPORT    := $(BUILD)/libkvblock_support.a
SHARED     := $(BUILD)/libkvblock.so.$(VERSION)
SONAME     := libkvblock.so.$(SOVERSION)

.PHONY: all lib tests tools stress-bins check check-unit stress helgrind drd tsan asan \
        memcheck bench install uninstall clean format format-check fuzz
.DEFAULT_GOAL := all

all: lib tools tests stress-bins
lib: $(STATIC) $(SHARED) $(BUILD)/kvblock.pc
tests: $(TESTS)
tools: $(TOOLS)
stress-bins: $(STRESS)

# ---- compilation: release objects and test objects (KVB_TESTING hooks) ------
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DKVB_TESTING $(CFLAGS) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(TSTATIC): $(TLIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# tests/support/*.c, compiled like the test library (KVB_TESTING hooks)
$(SUPPORT): $(SUPPORT_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(SHARED): $(LIB_OBJS) lib/kvblock.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/kvblock.map $(LDFLAGS) \
	    -o $@ $(LIB_OBJS) $(LDLIBS_LIB)
	ln -sf libkvblock.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libkvblock.so

$(BUILD)/kvblock.pc: kvblock.pc.in Makefile
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@LIBS_PRIVATE@|$(LDLIBS_LIB)|' kvblock.pc.in > $@

# Tests and torture programs include the shared helpers as "support/NAME.h".
$(BUILD)/tests/%: tests/%.c $(TSTATIC) $(SUPPORT) tests/testutil.h $(SUPPORT_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DKVB_TESTING -Itests $(CFLAGS) $(LDFLAGS) $< -o $@ $(SUPPORT) $(TSTATIC) \
	    $(CRITERION_LIBS) $(LDLIBS_LIB)

$(BUILD)/stress/%: stress/%.c $(TSTATIC) $(SUPPORT) $(SUPPORT_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DKVB_TESTING -Itests $(CFLAGS) $(LDFLAGS) $< -o $@ $(SUPPORT) $(TSTATIC) \
	    $(LDLIBS_LIB)

# A tool is tools/NAME.c (its main) plus, when the directory exists, the parts
# in tools/NAME/*.c, compiled like tools/common/ (with -Itools) and linked in.
# A mk/*.mk file that adds flags to $(BUILD)/tools/NAME adds them to
# $(BUILD)/obj/tools/NAME/%.o too when the parts need them.
.SECONDEXPANSION:
tool_parts = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/$(1)/*.c))
$(BUILD)/obj/tools/%.o: CPPFLAGS += -Itools
.SECONDARY: $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/*/*.c))
$(BUILD)/tools/%: tools/%.c $(STATIC) $(TOOL_COBJS) $$(call tool_parts,$$*)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itools $(CFLAGS) $(LDFLAGS) $< $(TOOL_COBJS) \
	    $(filter $(BUILD)/obj/tools/$*/%.o,$^) -o $@ $(STATIC) $(LDLIBS_LIB) $(LDLIBS_TOOL)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- tests -----------------------------------------------------------------
check: $(CHECKS)

check-unit: $(TESTS)
	@tests/run-unit.sh $(TESTS)

check-install: lib
	@BUILD=$(BUILD) CC=$(CC) tests/check-install.sh

# ---- race checkers and sanitizers (torture programs; see TOOLING.md) --------
STRESS_ARGS ?= 4 20000
VG_FLAGS := --error-exitcode=99 --exit-on-first-error=yes -q --suppressions=stress/valgrind.supp

stress: stress-bins
	@for s in $(STRESS); do echo "== $$s $(or $(LONG_ARGS),8 1250000)"; \
	    $$s $(or $(LONG_ARGS),8 1250000) || exit 1; done

helgrind:
	$(MAKE) BUILD=build-vg ANNOTATE=valgrind stress-bins
	@for s in $(STRESS_SRCS:stress/%.c=build-vg/stress/%); do echo "== helgrind $$s"; \
	    valgrind --tool=helgrind --history-level=approx $(VG_FLAGS) $$s $(STRESS_ARGS) || exit 1; done

drd:
	$(MAKE) BUILD=build-vg ANNOTATE=valgrind stress-bins
	@for s in $(STRESS_SRCS:stress/%.c=build-vg/stress/%); do echo "== drd $$s"; \
	    valgrind --tool=drd $(VG_FLAGS) $$s $(STRESS_ARGS) || exit 1; done

memcheck:
	$(MAKE) BUILD=build-vg ANNOTATE=valgrind stress-bins
	@for s in $(STRESS_SRCS:stress/%.c=build-vg/stress/%); do echo "== memcheck $$s"; \
	    valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=all $(VG_FLAGS) \
	    $$s $(STRESS_ARGS) || exit 1; done

TSAN_CC ?= $(CC)
tsan:
	$(MAKE) BUILD=build-tsan-$(notdir $(TSAN_CC)) CC=$(TSAN_CC) SAN=tsan stress-bins
	@for s in $(STRESS_SRCS:stress/%.c=build-tsan-$(notdir $(TSAN_CC))/stress/%); do \
	    echo "== tsan $$s"; TSAN_OPTIONS=halt_on_error=1 $$s $(STRESS_ARGS) || exit 1; done

ASAN_CC ?= $(CC)
asan:
	$(MAKE) BUILD=build-asan-$(notdir $(ASAN_CC)) CC=$(ASAN_CC) SAN=asan stress-bins tests
	@for s in $(STRESS_SRCS:stress/%.c=build-asan-$(notdir $(ASAN_CC))/stress/%); do \
	    echo "== asan $$s"; ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 $$s $(STRESS_ARGS) || exit 1; done
	ASAN_OPTIONS=detect_leaks=1 tests/run-unit.sh $(TEST_SRCS:tests/%.c=build-asan-$(notdir $(ASAN_CC))/tests/%)

# ---- install ---------------------------------------------------------------
install: lib
	install -d $(DESTDIR)$(PREFIX)/include/kvblock $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/kvblock.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/kvblock/*.h $(DESTDIR)$(PREFIX)/include/kvblock/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libkvblock.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libkvblock.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@LIBS_PRIVATE@|$(LDLIBS_LIB)|' kvblock.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvblock.pc
	install -d $(DESTDIR)$(PREFIX)/lib/cmake/kvblock
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@SOVERSION@|$(SOVERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(LDLIBS_LIB)|' -e 's|@LIBS_PRIVATE_LIST@|$(subst $(eval) ,;,$(strip $(LDLIBS_LIB)))|' \
	    cmake/kvblockConfig.cmake.in > $(DESTDIR)$(PREFIX)/lib/cmake/kvblock/kvblockConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@SOVERSION@|$(SOVERSION)|g' \
	    cmake/kvblockConfigVersion.cmake.in > $(DESTDIR)$(PREFIX)/lib/cmake/kvblock/kvblockConfigVersion.cmake

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/include/kvblock $(DESTDIR)$(PREFIX)/include/kvblock.h
	rm -f $(DESTDIR)$(PREFIX)/lib/libkvblock.* $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvblock.pc
	rm -rf $(DESTDIR)$(PREFIX)/lib/cmake/kvblock

# The whole tree's C and C++ (tests/data holds generated tables, kept one entry per line)
FORMAT_FILES = $(shell find include lib backends tools tests stress fuzz python bindings \
                   -path tests/data -prune -o -path '*/build*' -prune -o \
                   \( -name '*.[ch]' -o -name '*.cpp' \) -print)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-*
