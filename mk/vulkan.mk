# mk/vulkan.mk - the Vulkan device backend (backends/device/vulkan/).
#
#   VULKAN=auto (default)  built when /usr/include/vulkan/vulkan.h and
#                          glslangValidator both exist
#   VULKAN=1               built (fails if the tools are missing)
#   VULKAN=0               not built: kvb_device_open(KVB_DEVICE_VULKAN) is -ENODEV
#
# The GLSL compute shaders (backends/device/vulkan/*.comp) are compiled to SPIR-V
# headers in $(BUILD)/gen (a const uint32_t array named after the file) and
# embedded in the library. The Vulkan objects depend on those headers order-only
# (so they are generated first, in both the release and the test object trees);
# after the first build the compiler's .d files make a changed shader rebuild
# the objects that include it.

VULKAN ?= auto
GLSLANG ?= glslangValidator

ifeq ($(VULKAN),auto)
ifneq ($(and $(wildcard /usr/include/vulkan/vulkan.h),$(shell command -v $(GLSLANG) 2>/dev/null)),)
override VULKAN := 1
else
override VULKAN := 0
endif
endif

ifeq ($(VULKAN),1)
VK_SRCS    := $(wildcard backends/device/vulkan/*.c)
VK_SHADERS := $(wildcard backends/device/vulkan/*.comp)
VK_GEN     := $(VK_SHADERS:backends/device/vulkan/%.comp=$(BUILD)/gen/%.spv.h)
VK_OBJS    := $(VK_SRCS:%.c=$(BUILD)/obj/%.o) $(VK_SRCS:%.c=$(BUILD)/tobj/%.o)

LIB_SRCS   += $(VK_SRCS)
CPPFLAGS   += -DKVB_HAVE_VULKAN
LDLIBS_LIB += -lvulkan

$(BUILD)/gen/%.spv.h: backends/device/vulkan/%.comp
	@mkdir -p $(dir $@)
	$(GLSLANG) -V --target-env vulkan1.1 --vn $* -o $@ $<

$(VK_OBJS): | $(VK_GEN)
$(VK_OBJS): CPPFLAGS += -I$(BUILD)/gen
endif

# The device benchmark (cpu vs vulkan in the same run; docs/device.md). Built
# with or without Vulkan: without it, only the cpu rows are printed.
DEVICE_BENCH_ARGS ?=
.PHONY: bench-device
bench-device: $(BUILD)/tools/kvb-device-bench
	$(BUILD)/tools/kvb-device-bench $(DEVICE_BENCH_ARGS)
