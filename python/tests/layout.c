/*
 * layout.c - prints the size and field offsets of the C structs that the Python
 * binding declares (python/kvblock/_ffi.py, cffi ABI mode cannot check them),
 * as JSON; python/tests/test_layout.py compares them with cffi's view.
 * Built by mk/python.mk as $(BUILD)/python/layout.
 */
#include "kvblock.h"
#include <stddef.h>
#include <stdio.h>

#define S(T) printf("%s\"%s\": {\"size\": %zu", first ? "" : ",\n", #T, sizeof(T)), first = 0
#define F(T, f) printf(", \"%s\": %zu", #f, offsetof(T, f))
#define E() printf("}")

int main(void)
{
    int first = 1;
    printf("{\n");
    S(kvb_hash); F(kvb_hash, hi); F(kvb_hash, lo); E();
    S(kvb_mutable); F(kvb_mutable, pool); F(kvb_mutable, id); F(kvb_mutable, gen); E();
    S(kvb_complete); F(kvb_complete, pool); F(kvb_complete, id); F(kvb_complete, gen);
    F(kvb_complete, hash); E();
    S(kvb_block); F(kvb_block, pool); F(kvb_block, id); F(kvb_block, gen); F(kvb_block, hash); E();
    S(kvb_weak); F(kvb_weak, pool); F(kvb_weak, id); F(kvb_weak, gen); F(kvb_weak, hash); E();
    S(kvb_block_addr); F(kvb_block_addr, pool_id); F(kvb_block_addr, block_id);
    F(kvb_block_addr, hash); E();
    S(kvb_callbacks); F(kvb_callbacks, user); F(kvb_callbacks, on_reset);
    F(kvb_callbacks, on_evict); E();
    S(kvb_allocator); F(kvb_allocator, ctx); F(kvb_allocator, alloc); F(kvb_allocator, free); E();
    S(kvb_pool_config); F(kvb_pool_config, block_count); F(kvb_pool_config, block_size);
    F(kvb_pool_config, dup_policy); F(kvb_pool_config, evict);
    F(kvb_pool_config, multi_lru_thresholds); F(kvb_pool_config, reset_on_release);
    F(kvb_pool_config, registry); F(kvb_pool_config, name); F(kvb_pool_config, callbacks);
    F(kvb_pool_config, evict_ops); F(kvb_pool_config, abort_on_misuse);
    F(kvb_pool_config, allocator); F(kvb_pool_config, events);
    F(kvb_pool_config, hint_capacity); F(kvb_pool_config, priorities);
    F(kvb_pool_config, clock); E();
    S(kvb_stats); F(kvb_stats, block_count); F(kvb_stats, reset); F(kvb_stats, mutable_);
    F(kvb_stats, staged); F(kvb_stats, primary); F(kvb_stats, duplicate); F(kvb_stats, inactive);
    F(kvb_stats, peak_in_use); F(kvb_stats, allocations); F(kvb_stats, allocations_from_reset);
    F(kvb_stats, evictions); F(kvb_stats, registrations); F(kvb_stats, duplicates);
    F(kvb_stats, dedups); F(kvb_stats, stagings); F(kvb_stats, match_requested);
    F(kvb_stats, match_returned); F(kvb_stats, misuse); F(kvb_stats, eager_transitions);
    F(kvb_stats, allocate_rollbacks); F(kvb_stats, release_noops);
    F(kvb_stats, lock_acquisitions); F(kvb_stats, lock_contended); F(kvb_stats, lock_wait_ns);
    F(kvb_stats, resurrections); F(kvb_stats, scan_requested); F(kvb_stats, scan_returned);
    F(kvb_stats, hint_uses); F(kvb_stats, hint_hashes); F(kvb_stats, hint_protected);
    F(kvb_stats, hint_added); F(kvb_stats, hint_withdrawn); F(kvb_stats, hint_unmatched);
    F(kvb_stats, hint_rejected); F(kvb_stats, hint_evictions); F(kvb_stats, retained);
    F(kvb_stats, retention_timers); F(kvb_stats, retention_expired);
    F(kvb_stats, retained_evictions); E();
    S(kvb_event); F(kvb_event, type); F(kvb_event, seq); F(kvb_event, n); F(kvb_event, hashes);
    F(kvb_event, block_ids); F(kvb_event, has_parent); F(kvb_event, parent);
    F(kvb_event, block_size); F(kvb_event, token_ids); F(kvb_event, medium); E();
    S(kvb_event_config); F(kvb_event_config, user); F(kvb_event_config, sink);
    F(kvb_event_config, emit); F(kvb_event_config, pow2_min); F(kvb_event_config, pow2_max);
    F(kvb_event_config, batch_max); F(kvb_event_config, batch_delay_ms);
    F(kvb_event_config, tokens); F(kvb_event_config, medium); F(kvb_event_config, max_hashes); E();
    S(kvb_event_stats); F(kvb_event_stats, records); F(kvb_event_stats, filtered);
    F(kvb_event_stats, lost); F(kvb_event_stats, events); F(kvb_event_stats, deliveries);
    F(kvb_event_stats, last_seq); F(kvb_event_stats, waiting);
    F(kvb_event_stats, unresolved_parents); E();
    S(kvb_registry_config); F(kvb_registry_config, capacity); F(kvb_registry_config, allocator); E();
    printf("\n}\n");
    return 0;
}
