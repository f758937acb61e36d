//! The hand-written declarations must have the C compiler's layout: build.rs compiled a
//! probe printing every sizeof/offsetof of the structs in src/lib.rs (C_LAYOUT).
use kvblock_sys::*;
use std::mem::{size_of, MaybeUninit};

include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));

fn c(s: &str, f: &str) -> usize {
    C_LAYOUT
        .unwrap()
        .iter()
        .find(|e| e.0 == s && e.1 == f)
        .unwrap_or_else(|| panic!("{}.{} not printed by the probe", s, f))
        .2
}

macro_rules! check {
    ($checked:ident, $t:ident { $($f:ident),* }) => {{
        assert_eq!(size_of::<$t>(), c(stringify!($t), ""), "sizeof({})", stringify!($t));
        let u = MaybeUninit::<$t>::uninit();
        let base = u.as_ptr();
        $(
            // SAFETY: addr_of! on a field of an uninitialised value reads nothing.
            let off = unsafe { std::ptr::addr_of!((*base).$f) as usize - base as usize };
            assert_eq!(off, c(stringify!($t), stringify!($f)),
                       "offsetof({}, {})", stringify!($t), stringify!($f));
        )*
        $checked += 1;
    }};
}

#[test]
fn every_struct_has_the_c_layout() {
    if C_LAYOUT.is_none() {
        eprintln!("layout: SKIPPED (no C compiler or kvblock headers when building)");
        return;
    }
    let mut n = 0;
    check!(n, kvb_hash { hi, lo });
    check!(n, kvb_callbacks { user, on_reset, on_evict });
    check!(n, kvb_allocator { ctx, alloc, free });
    check!(n, kvb_pool_config { block_count, block_size, dup_policy, evict, multi_lru_thresholds,
        reset_on_release, registry, name, callbacks, evict_ops, abort_on_misuse, allocator,
        events, hint_capacity, priorities, clock });
    check!(n, kvb_clock { ctx, now_ms });
    check!(n, kvb_mutable { pool, id, gen });
    check!(n, kvb_complete { pool, id, gen, hash });
    check!(n, kvb_block { pool, id, gen, hash });
    check!(n, kvb_weak { pool, id, gen, hash });
    check!(n, kvb_block_addr { pool_id, block_id, hash });
    check!(n, kvb_stats { block_count, reset, mutable_, staged, primary, duplicate, inactive,
        peak_in_use, allocations, allocations_from_reset, evictions, registrations, duplicates,
        dedups, stagings, match_requested, match_returned, misuse, eager_transitions,
        allocate_rollbacks, release_noops, lock_acquisitions, lock_contended, lock_wait_ns,
        resurrections, scan_requested, scan_returned, hint_uses, hint_hashes, hint_protected,
        hint_added, hint_withdrawn, hint_unmatched, hint_rejected, hint_evictions, retained,
        retention_timers, retention_expired, retained_evictions });
    check!(n, kvb_index_config { block_size, seed, tier_weight, stale_after_s, drop_after_s,
        max_streams, max_entries_per_stream, shards, allocator });
    check!(n, kvb_index_stream_config { name, dp_rank, hashes, block_size });
    check!(n, kvb_index_event { type_, tier, n_hashes, hashes, has_parent, parent, tokens,
        n_tokens, block_size, salt_key });
    check!(n, kvb_index_result { stream, dp_rank, device, host, disk, score, entries, state,
        worker });
    check!(n, kvb_index_stats { streams, keys, entries, memory_bytes, batches, events,
        block_ops, matches, matched_blocks });
    // every struct the probe printed was checked
    let printed = C_LAYOUT.unwrap().iter().filter(|e| e.1.is_empty()).count();
    assert_eq!(n, printed);
}

#[test]
fn the_library_links_and_answers() {
    let name = unsafe { std::ffi::CStr::from_ptr(kvb_err_name(-28)) };
    assert_eq!(name.to_str().unwrap(), "ENOSPC");
}
