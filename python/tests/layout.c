/*
 * layout.c - prints the size and field offsets of the C structs that the Python
 * binding declares (python/kvblock/_ffi.py, cffi ABI mode cannot check them),
 * as JSON; python/tests/test_layout.py compares them with cffi's view.
 * Built by mk/python.mk as $(BUILD)/python/layout.
 */
#include "kvblock.h"
#include "kvblock/index.h"
#include "kvblock/publisher.h"
#include "kvblock/subscriber.h"
#include <stddef.h>
#include <stdio.h>

/* One struct per statement: S(type), F(type, field)..., E(), joined by commas. */
#define S(T)    printf("%s\"%s\": {\"size\": %zu", first ? "" : ",\n", #T, sizeof(T)), first = 0
#define F(T, f) printf(", \"%s\": %zu", #f, offsetof(T, f))
#define E()     printf("}")

int main(void)
{
    int first = 1;
    printf("{\n");
    S(kvb_hash), F(kvb_hash, hi), F(kvb_hash, lo), E();
    S(kvb_mutable), F(kvb_mutable, pool), F(kvb_mutable, id), F(kvb_mutable, gen), E();
    S(kvb_complete), F(kvb_complete, pool), F(kvb_complete, id), F(kvb_complete, gen),
        F(kvb_complete, hash), E();
    S(kvb_block), F(kvb_block, pool), F(kvb_block, id), F(kvb_block, gen), F(kvb_block, hash), E();
    S(kvb_weak), F(kvb_weak, pool), F(kvb_weak, id), F(kvb_weak, gen), F(kvb_weak, hash), E();
    S(kvb_block_addr), F(kvb_block_addr, pool_id), F(kvb_block_addr, block_id),
        F(kvb_block_addr, hash), E();
    S(kvb_callbacks), F(kvb_callbacks, user), F(kvb_callbacks, on_reset),
        F(kvb_callbacks, on_evict), E();
    S(kvb_allocator), F(kvb_allocator, ctx), F(kvb_allocator, alloc), F(kvb_allocator, free), E();
    S(kvb_pool_config), F(kvb_pool_config, block_count), F(kvb_pool_config, block_size),
        F(kvb_pool_config, dup_policy), F(kvb_pool_config, evict),
        F(kvb_pool_config, multi_lru_thresholds), F(kvb_pool_config, reset_on_release),
        F(kvb_pool_config, registry), F(kvb_pool_config, name), F(kvb_pool_config, callbacks),
        F(kvb_pool_config, evict_ops), F(kvb_pool_config, abort_on_misuse),
        F(kvb_pool_config, allocator), F(kvb_pool_config, events),
        F(kvb_pool_config, hint_capacity), F(kvb_pool_config, priorities),
        F(kvb_pool_config, clock), E();
    S(kvb_stats), F(kvb_stats, block_count), F(kvb_stats, reset), F(kvb_stats, mutable_),
        F(kvb_stats, staged), F(kvb_stats, primary), F(kvb_stats, duplicate),
        F(kvb_stats, inactive), F(kvb_stats, peak_in_use), F(kvb_stats, allocations),
        F(kvb_stats, allocations_from_reset), F(kvb_stats, evictions), F(kvb_stats, registrations),
        F(kvb_stats, duplicates), F(kvb_stats, dedups), F(kvb_stats, stagings),
        F(kvb_stats, match_requested), F(kvb_stats, match_returned), F(kvb_stats, misuse),
        F(kvb_stats, eager_transitions), F(kvb_stats, allocate_rollbacks),
        F(kvb_stats, release_noops), F(kvb_stats, lock_acquisitions), F(kvb_stats, lock_contended),
        F(kvb_stats, lock_wait_ns), F(kvb_stats, resurrections), F(kvb_stats, scan_requested),
        F(kvb_stats, scan_returned), F(kvb_stats, hint_uses), F(kvb_stats, hint_hashes),
        F(kvb_stats, hint_protected), F(kvb_stats, hint_added), F(kvb_stats, hint_withdrawn),
        F(kvb_stats, hint_unmatched), F(kvb_stats, hint_rejected), F(kvb_stats, hint_evictions),
        F(kvb_stats, retained), F(kvb_stats, retention_timers), F(kvb_stats, retention_expired),
        F(kvb_stats, retained_evictions), E();
    S(kvb_event), F(kvb_event, type), F(kvb_event, seq), F(kvb_event, n), F(kvb_event, hashes),
        F(kvb_event, block_ids), F(kvb_event, has_parent), F(kvb_event, parent),
        F(kvb_event, block_size), F(kvb_event, token_ids), F(kvb_event, medium), E();
    S(kvb_event_config), F(kvb_event_config, user), F(kvb_event_config, sink),
        F(kvb_event_config, emit), F(kvb_event_config, pow2_min), F(kvb_event_config, pow2_max),
        F(kvb_event_config, batch_max), F(kvb_event_config, batch_delay_ms),
        F(kvb_event_config, tokens), F(kvb_event_config, medium), F(kvb_event_config, max_hashes),
        E();
    S(kvb_event_stats), F(kvb_event_stats, records), F(kvb_event_stats, filtered),
        F(kvb_event_stats, lost), F(kvb_event_stats, events), F(kvb_event_stats, deliveries),
        F(kvb_event_stats, last_seq), F(kvb_event_stats, waiting),
        F(kvb_event_stats, unresolved_parents), E();
    S(kvb_registry_config), F(kvb_registry_config, capacity), F(kvb_registry_config, allocator),
        E();
    /* the fleet index, its subscriber and the publisher (python/kvblock/_ffi_index.py) */ S(
        kvb_index_config),
        F(kvb_index_config, block_size), F(kvb_index_config, seed),
        F(kvb_index_config, tier_weight), F(kvb_index_config, stale_after_s),
        F(kvb_index_config, drop_after_s), F(kvb_index_config, max_streams),
        F(kvb_index_config, max_entries_per_stream), F(kvb_index_config, shards),
        F(kvb_index_config, allocator), E();
    S(kvb_index_stream_config), F(kvb_index_stream_config, name),
        F(kvb_index_stream_config, dp_rank), F(kvb_index_stream_config, hashes),
        F(kvb_index_stream_config, block_size), E();
    S(kvb_index_event), F(kvb_index_event, type), F(kvb_index_event, tier),
        F(kvb_index_event, n_hashes), F(kvb_index_event, hashes), F(kvb_index_event, has_parent),
        F(kvb_index_event, parent), F(kvb_index_event, tokens), F(kvb_index_event, n_tokens),
        F(kvb_index_event, block_size), F(kvb_index_event, salt_key), E();
    S(kvb_index_batch), F(kvb_index_batch, ts), F(kvb_index_batch, dp_rank),
        F(kvb_index_batch, n_events), F(kvb_index_batch, events), F(kvb_index_batch, dropped),
        F(kvb_index_batch, priv_), E();
    S(kvb_index_result), F(kvb_index_result, stream), F(kvb_index_result, dp_rank),
        F(kvb_index_result, device), F(kvb_index_result, host), F(kvb_index_result, disk),
        F(kvb_index_result, score), F(kvb_index_result, entries), F(kvb_index_result, state),
        F(kvb_index_result, worker), E();
    S(kvb_index_stream_info), F(kvb_index_stream_info, stream), F(kvb_index_stream_info, worker),
        F(kvb_index_stream_info, dp_rank), F(kvb_index_stream_info, hashes),
        F(kvb_index_stream_info, block_size), F(kvb_index_stream_info, state),
        F(kvb_index_stream_info, last_seq), F(kvb_index_stream_info, batches),
        F(kvb_index_stream_info, events), F(kvb_index_stream_info, counters),
        F(kvb_index_stream_info, dropped), F(kvb_index_stream_info, entries),
        F(kvb_index_stream_info, engine_map), F(kvb_index_stream_info, last_heard_ns), E();
    S(kvb_index_stats), F(kvb_index_stats, streams), F(kvb_index_stats, keys),
        F(kvb_index_stats, entries), F(kvb_index_stats, memory_bytes), F(kvb_index_stats, batches),
        F(kvb_index_stats, events), F(kvb_index_stats, block_ops), F(kvb_index_stats, matches),
        F(kvb_index_stats, matched_blocks), E();
    S(kvb_subscriber_worker), F(kvb_subscriber_worker, name), F(kvb_subscriber_worker, endpoint),
        F(kvb_subscriber_worker, replay_endpoint), F(kvb_subscriber_worker, kind),
        F(kvb_subscriber_worker, block_size), F(kvb_subscriber_worker, topic), E();
    S(kvb_subscriber_config), F(kvb_subscriber_config, index),
        F(kvb_subscriber_config, replay_timeout_ms), F(kvb_subscriber_config, heartbeat_ivl_ms),
        F(kvb_subscriber_config, tick_ms), F(kvb_subscriber_config, max_message_bytes),
        F(kvb_subscriber_config, max_replay_batches), F(kvb_subscriber_config, reconnect_ivl_ms),
        F(kvb_subscriber_config, reconnect_ivl_max_ms), F(kvb_subscriber_config, callback),
        F(kvb_subscriber_config, user), E();
    S(kvb_subscriber_worker_info), F(kvb_subscriber_worker_info, name),
        F(kvb_subscriber_worker_info, connected), F(kvb_subscriber_worker_info, heard),
        F(kvb_subscriber_worker_info, expected_seq), F(kvb_subscriber_worker_info, messages),
        F(kvb_subscriber_worker_info, bad_messages), F(kvb_subscriber_worker_info, gaps),
        F(kvb_subscriber_worker_info, replays), F(kvb_subscriber_worker_info, replay_failures),
        F(kvb_subscriber_worker_info, restarts), F(kvb_subscriber_worker_info, bad_payloads), E();
    S(kvb_publisher_config), F(kvb_publisher_config, endpoint), F(kvb_publisher_config, attach),
        F(kvb_publisher_config, replay_endpoint), F(kvb_publisher_config, topic),
        F(kvb_publisher_config, medium), F(kvb_publisher_config, data_parallel_rank),
        F(kvb_publisher_config, lora_id), F(kvb_publisher_config, queue_batches),
        F(kvb_publisher_config, buffer_batches), F(kvb_publisher_config, hwm),
        F(kvb_publisher_config, linger_ms), F(kvb_publisher_config, offset_by_rank),
        F(kvb_publisher_config, layout), E();
    S(kvb_publisher_stats), F(kvb_publisher_stats, enqueued), F(kvb_publisher_stats, dropped),
        F(kvb_publisher_stats, published), F(kvb_publisher_stats, events),
        F(kvb_publisher_stats, replay_requests), F(kvb_publisher_stats, replayed),
        F(kvb_publisher_stats, bad_requests), F(kvb_publisher_stats, last_seq), E();
    /* constants written as numbers in the cffi declarations */
    printf(",\n\"constants\": {\"KVB_TIER_COUNT\": %d, \"KVB_DROP_COUNT\": %d, "
           "\"KVB_COUNT_COUNT\": %d, \"KVB_INDEX_NAME_MAX\": %d, \"KVB_INDEX_NO_RANK\": %d, "
           "\"KVB_INDEX_NO_STREAM\": %llu, \"KVB_HASH_DYNAMO_SEED\": %llu}",
           (int)KVB_TIER_COUNT, (int)KVB_DROP_COUNT, (int)KVB_COUNT_COUNT, (int)KVB_INDEX_NAME_MAX,
           (int)KVB_INDEX_NO_RANK, (unsigned long long)KVB_INDEX_NO_STREAM,
           (unsigned long long)KVB_HASH_DYNAMO_SEED);
    printf("\n}\n");
    return 0;
}
