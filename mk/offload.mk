# mk/offload.mk - check-offload: run tools/kvb-offload-demo (two tiers, one
# registry, offload on GPU eviction, onboarding from the host tier) with --check
# on small inputs; the demo verifies its invariants (every GPU eviction offloaded
# or skipped as already present, host registrations == offloads, GPU-tier hits ==
# a GPU-only replay's, hits <= infinite cache, registry presence == pool content,
# pools clean) and exits 1 on a violation. The Mooncake trace is used when present.

OFFLOAD_TRACE ?= ../shared/data/mooncake/mooncake_conversation_trace.jsonl

CHECKS += check-offload
.PHONY: check-offload

check-offload: $(BUILD)/tools/kvb-offload-demo
	@$(BUILD)/tools/kvb-offload-demo --requests 2000 --gpu 256 --host 1024 --show-moves 0 \
	    --check > $(BUILD)/check-offload.out || { cat $(BUILD)/check-offload.out; exit 1; }
	@$(BUILD)/tools/kvb-offload-demo --requests 2000 --gpu 256 --host 1024 --show-moves 0 \
	    --policy fifo --check >> $(BUILD)/check-offload.out || { cat $(BUILD)/check-offload.out; exit 1; }
	@if [ -r $(OFFLOAD_TRACE) ]; then \
	    $(BUILD)/tools/kvb-offload-demo --trace $(OFFLOAD_TRACE) --limit 3000 --gpu 512 \
	        --host 4096 --show-moves 0 --check >> $(BUILD)/check-offload.out || \
	        { cat $(BUILD)/check-offload.out; exit 1; }; \
	fi
	@n=$$(grep -c 'all invariants hold' $(BUILD)/check-offload.out); \
	    echo "check-offload: $$n passed, 0 failed"
