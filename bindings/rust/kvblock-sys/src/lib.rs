//! Raw declarations of libkvblock's C API (`include/kvblock.h`, `include/kvblock/index.h`).
//!
//! Written by hand: Debian 12 has no bindgen setup usable offline (bindgen is a registry
//! crate and needs libclang bindings), so these are transcribed from the headers and
//! checked against the C compiler's layout by `tests/layout.rs` (build.rs compiles a
//! probe that prints every size and offset). Only what the safe `kvblock` crate uses is
//! declared, plus the obvious neighbours. All functions are `unsafe`; the rules are the
//! C header's (each function documents its thread safety and handle ownership there).
//!
//! C enums are `c_int` type aliases with their values as constants.
#![allow(non_camel_case_types)]
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};

// ---- hashes -------------------------------------------------------------------------

/// 128-bit positional lineage hash (`kvb_hash`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct kvb_hash {
    pub hi: u64,
    pub lo: u64,
}

pub const KVB_HASH_MAX_POSITION: u32 = (1 << 24) - 1;
pub const KVB_HASH_DYNAMO_SEED: u64 = 1337;
pub const KVB_MAX_BLOCKS: u32 = 1 << 30;

// ---- pools ---------------------------------------------------------------------------

/// Opaque pool.
#[repr(C)]
pub struct kvb_pool {
    _private: [u8; 0],
}
/// Opaque registry.
#[repr(C)]
pub struct kvb_registry {
    _private: [u8; 0],
}
/// Opaque custom eviction backend (kvblock/inactive.h): not bound.
#[repr(C)]
pub struct kvb_inactive_ops {
    _private: [u8; 0],
}
/// Event configuration (kvblock/events.h): not bound; pass NULL.
#[repr(C)]
pub struct kvb_event_config {
    _private: [u8; 0],
}

pub type kvb_dup_policy = c_int;
pub const KVB_DUP_ALLOW: kvb_dup_policy = 0;
pub const KVB_DUP_REJECT: kvb_dup_policy = 1;

pub type kvb_evict_policy = c_int;
pub const KVB_EVICT_LRU: kvb_evict_policy = 0;
pub const KVB_EVICT_FIFO: kvb_evict_policy = 1;
pub const KVB_EVICT_MULTI_LRU: kvb_evict_policy = 2;
pub const KVB_EVICT_TINYLFU: kvb_evict_policy = 3;
pub const KVB_EVICT_LINEAGE: kvb_evict_policy = 4;
pub const KVB_EVICT_LINEAGE_ARC: kvb_evict_policy = 5;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_callbacks {
    pub user: *mut c_void,
    pub on_reset: Option<unsafe extern "C" fn(user: *mut c_void, block_id: u32)>,
    pub on_evict: Option<unsafe extern "C" fn(user: *mut c_void, hash: kvb_hash, block_id: u32)>,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_allocator {
    pub ctx: *mut c_void,
    pub alloc: Option<unsafe extern "C" fn(ctx: *mut c_void, size: usize) -> *mut c_void>,
    pub free: Option<unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void, size: usize)>,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_pool_config {
    pub block_count: u32,
    pub block_size: u32,
    pub dup_policy: kvb_dup_policy,
    pub evict: kvb_evict_policy,
    pub multi_lru_thresholds: [u8; 3],
    pub reset_on_release: bool,
    pub registry: *mut kvb_registry,
    pub name: *const c_char,
    pub callbacks: kvb_callbacks,
    pub evict_ops: *const kvb_inactive_ops,
    pub abort_on_misuse: bool,
    pub allocator: kvb_allocator,
    pub events: *const kvb_event_config,
    pub hint_capacity: u32,
    pub priorities: bool,
    pub clock: kvb_clock,
}

/// A monotonic clock in milliseconds for retention durations (`now_ms` None: CLOCK_MONOTONIC).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_clock {
    pub ctx: *mut c_void,
    pub now_ms: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
}

// ---- handles -------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_mutable {
    pub pool: *mut kvb_pool,
    pub id: u32,
    pub gen: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_complete {
    pub pool: *mut kvb_pool,
    pub id: u32,
    pub gen: u32,
    pub hash: kvb_hash,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_block {
    pub pool: *mut kvb_pool,
    pub id: u32,
    pub gen: u32,
    pub hash: kvb_hash,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_weak {
    pub pool: *mut kvb_pool,
    pub id: u32,
    pub gen: u32,
    pub hash: kvb_hash,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvb_block_addr {
    pub pool_id: u64,
    pub block_id: u32,
    pub hash: kvb_hash,
}

// kvb_mutable has no hash: give it its own zeroed().
impl kvb_mutable {
    /// The cleared handle (what a consuming call leaves behind).
    pub const fn zeroed() -> Self {
        kvb_mutable { pool: core::ptr::null_mut(), id: 0, gen: 0 }
    }
}
impl kvb_complete {
    /// The cleared handle (what a consuming call leaves behind).
    pub const fn zeroed() -> Self {
        kvb_complete { pool: core::ptr::null_mut(), id: 0, gen: 0, hash: kvb_hash { hi: 0, lo: 0 } }
    }
}
impl kvb_block {
    /// The cleared handle (what a consuming call leaves behind).
    pub const fn zeroed() -> Self {
        kvb_block { pool: core::ptr::null_mut(), id: 0, gen: 0, hash: kvb_hash { hi: 0, lo: 0 } }
    }
}
impl kvb_weak {
    /// The cleared handle.
    pub const fn zeroed() -> Self {
        kvb_weak { pool: core::ptr::null_mut(), id: 0, gen: 0, hash: kvb_hash { hi: 0, lo: 0 } }
    }
}

// ---- stats ---------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvb_stats {
    pub block_count: u32,
    pub reset: u32,
    pub mutable_: u32,
    pub staged: u32,
    pub primary: u32,
    pub duplicate: u32,
    pub inactive: u32,
    pub peak_in_use: u32,
    pub allocations: u64,
    pub allocations_from_reset: u64,
    pub evictions: u64,
    pub registrations: u64,
    pub duplicates: u64,
    pub dedups: u64,
    pub stagings: u64,
    pub match_requested: u64,
    pub match_returned: u64,
    pub misuse: u64,
    pub eager_transitions: u64,
    pub allocate_rollbacks: u64,
    pub release_noops: u64,
    pub lock_acquisitions: u64,
    pub lock_contended: u64,
    pub lock_wait_ns: u64,
    pub resurrections: u64,
    pub scan_requested: u64,
    pub scan_returned: u64,
    pub hint_uses: u64,
    pub hint_hashes: u32,
    pub hint_protected: u32,
    pub hint_added: u64,
    pub hint_withdrawn: u64,
    pub hint_unmatched: u64,
    pub hint_rejected: u64,
    pub hint_evictions: u64,
    pub retained: u32,
    pub retention_timers: u32,
    pub retention_expired: u64,
    pub retained_evictions: u64,
}

extern "C" {
    pub fn kvb_strerror(err: c_int) -> *const c_char;
    pub fn kvb_err_name(err: c_int) -> *const c_char;

    pub fn kvb_hash_make(
        current: u64,
        parent: u64,
        has_parent: bool,
        position: u32,
        out: *mut kvb_hash,
    ) -> c_int;
    pub fn kvb_hash_position(h: kvb_hash) -> u32;
    pub fn kvb_hash_current(h: kvb_hash) -> u64;
    pub fn kvb_hash_equal(a: kvb_hash, b: kvb_hash) -> bool;
    pub fn kvb_hash_is_parent(parent: kvb_hash, child: kvb_hash) -> bool;
    pub fn kvb_hash_extend(parent: kvb_hash, current: u64, out: *mut kvb_hash) -> c_int;
    pub fn kvb_hash_format(h: kvb_hash, buf: *mut c_char, cap: usize) -> c_int;
    pub fn kvb_hash_salt(salt: *const c_void, len: usize) -> u64;
    pub fn kvb_hash_block(tokens: *const u32, n: usize, salt_hash: u64) -> u64;
    pub fn kvb_hash_chain(parent_seq: u64, block_hash: u64) -> u64;
    pub fn kvb_hash_tokens(
        tokens: *const u32,
        n_tokens: usize,
        block_size: u32,
        salt_hash: u64,
        out: *mut kvb_hash,
        out_cap: usize,
    ) -> c_int;

    pub fn kvb_pool_config_init(cfg: *mut kvb_pool_config);
    pub fn kvb_pool_create(cfg: *const kvb_pool_config, out: *mut *mut kvb_pool) -> c_int;
    pub fn kvb_pool_destroy(pool: *mut kvb_pool) -> c_int;
    pub fn kvb_pool_id(pool: *const kvb_pool) -> u64;
    pub fn kvb_pool_block_count(pool: *const kvb_pool) -> u32;
    pub fn kvb_pool_block_size(pool: *const kvb_pool) -> u32;
    pub fn kvb_pool_name(pool: *const kvb_pool) -> *const c_char;
    pub fn kvb_pool_policy_name(pool: *const kvb_pool) -> *const c_char;
    pub fn kvb_pool_available(pool: *mut kvb_pool) -> u32;
    pub fn kvb_pool_reset_inactive(pool: *mut kvb_pool) -> c_int;
    pub fn kvb_pool_check(pool: *mut kvb_pool) -> c_int;

    pub fn kvb_pool_allocate(
        pool: *mut kvb_pool,
        n: u32,
        out: *mut kvb_mutable,
        evicted: *mut kvb_hash,
        n_evicted: *mut u32,
    ) -> c_int;
    pub fn kvb_mutable_stage(m: *mut kvb_mutable, hash: kvb_hash, out: *mut kvb_complete) -> c_int;
    pub fn kvb_pool_stage(
        pool: *mut kvb_pool,
        input: *mut kvb_mutable,
        hashes: *const kvb_hash,
        n: u32,
        out: *mut kvb_complete,
    ) -> c_int;
    pub fn kvb_mutable_release(m: *mut kvb_mutable) -> c_int;
    pub fn kvb_complete_reset(c: *mut kvb_complete, out: *mut kvb_mutable) -> c_int;
    pub fn kvb_complete_release(c: *mut kvb_complete) -> c_int;
    pub fn kvb_pool_register(
        pool: *mut kvb_pool,
        input: *mut kvb_complete,
        n: u32,
        out: *mut kvb_block,
    ) -> c_int;
    pub fn kvb_pool_match(
        pool: *mut kvb_pool,
        hashes: *const kvb_hash,
        n: u32,
        out: *mut kvb_block,
    ) -> c_int;
    pub fn kvb_pool_match_scattered(
        pool: *mut kvb_pool,
        hashes: *const kvb_hash,
        n: u32,
        out: *mut kvb_block,
        hit: *mut bool,
    ) -> c_int;
    pub fn kvb_pool_scan(
        pool: *mut kvb_pool,
        hashes: *const kvb_hash,
        n: u32,
        touch: bool,
        out: *mut kvb_block,
        hit: *mut bool,
    ) -> c_int;
    pub fn kvb_block_clone(b: *const kvb_block, out: *mut kvb_block) -> c_int;
    pub fn kvb_block_release(b: *mut kvb_block) -> c_int;
    pub fn kvb_block_release_n(blocks: *mut kvb_block, n: u32) -> c_int;
    pub fn kvb_block_set_reset_on_release(b: *mut kvb_block, on: bool) -> c_int;
    pub fn kvb_block_use_count(b: *const kvb_block) -> u32;
    pub fn kvb_block_address(b: *const kvb_block, out: *mut kvb_block_addr) -> c_int;
    pub fn kvb_block_downgrade(b: *const kvb_block, out: *mut kvb_weak);
    pub fn kvb_weak_upgrade(w: *const kvb_weak, out: *mut kvb_block) -> c_int;

    pub fn kvb_pool_stats(pool: *mut kvb_pool, out: *mut kvb_stats) -> c_int;
    pub fn kvb_pool_metrics_text(pool: *mut kvb_pool, buf: *mut c_char, cap: usize) -> c_int;
}

// ---- the fleet index (kvblock/index.h) ------------------------------------------------

/// Opaque fleet index.
#[repr(C)]
pub struct kvb_index {
    _private: [u8; 0],
}

pub const KVB_INDEX_NAME_MAX: usize = 64;
pub const KVB_INDEX_NO_RANK: i64 = -1;
pub const KVB_INDEX_NO_STREAM: u32 = u32::MAX;

pub type kvb_tier = c_int;
pub const KVB_TIER_DEVICE: kvb_tier = 0;
pub const KVB_TIER_HOST: kvb_tier = 1;
pub const KVB_TIER_DISK: kvb_tier = 2;
pub const KVB_TIER_COUNT: usize = 3;

pub type kvb_index_hashes_kind = c_int;
pub const KVB_INDEX_HASHES_ROUTER: kvb_index_hashes_kind = 0;
pub const KVB_INDEX_HASHES_ENGINE: kvb_index_hashes_kind = 1;

pub type kvb_stream_state = c_int;
pub const KVB_STREAM_LIVE: kvb_stream_state = 0;
pub const KVB_STREAM_RESYNCING: kvb_stream_state = 1;
pub const KVB_STREAM_LAGGING: kvb_stream_state = 2;
pub const KVB_STREAM_STALE: kvb_stream_state = 3;

pub type kvb_index_ev_type = c_int;
pub const KVB_INDEX_EV_STORED: kvb_index_ev_type = 1;
pub const KVB_INDEX_EV_REMOVED: kvb_index_ev_type = 2;
pub const KVB_INDEX_EV_CLEARED: kvb_index_ev_type = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_index_config {
    pub block_size: u32,
    pub seed: u64,
    pub tier_weight: [f64; KVB_TIER_COUNT],
    pub stale_after_s: f64,
    pub drop_after_s: f64,
    pub max_streams: u32,
    pub max_entries_per_stream: u32,
    pub shards: u32,
    pub allocator: kvb_allocator,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_index_stream_config {
    pub name: *const c_char,
    pub dp_rank: i64,
    pub hashes: kvb_index_hashes_kind,
    pub block_size: u32,
}

/// One normalized event (`type` is a Rust keyword: `type_`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_index_event {
    pub type_: kvb_index_ev_type,
    pub tier: kvb_tier,
    pub n_hashes: u32,
    pub hashes: *const u64,
    pub has_parent: bool,
    pub parent: u64,
    pub tokens: *const u32,
    pub n_tokens: u32,
    pub block_size: u32,
    pub salt_key: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_index_result {
    pub stream: u32,
    pub dp_rank: i64,
    pub device: u32,
    pub host: u32,
    pub disk: u32,
    pub score: f64,
    pub entries: u64,
    pub state: kvb_stream_state,
    pub worker: [c_char; KVB_INDEX_NAME_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvb_index_stats {
    pub streams: u32,
    pub keys: u64,
    pub entries: u64,
    pub memory_bytes: u64,
    pub batches: u64,
    pub events: u64,
    pub block_ops: u64,
    pub matches: u64,
    pub matched_blocks: u64,
}

extern "C" {
    pub fn kvb_index_config_init(cfg: *mut kvb_index_config);
    pub fn kvb_index_create(cfg: *const kvb_index_config, out: *mut *mut kvb_index) -> c_int;
    pub fn kvb_index_destroy(idx: *mut kvb_index) -> c_int;
    pub fn kvb_index_salt_key(
        lora_name: *const c_char,
        lora_len: usize,
        cache_salt: *const c_char,
        salt_len: usize,
    ) -> u64;
    pub fn kvb_index_hashes(
        idx: *const kvb_index,
        tokens: *const u32,
        n_tokens: usize,
        lora_name: *const c_char,
        cache_salt: *const c_char,
        out: *mut u64,
        cap: usize,
    ) -> c_int;
    pub fn kvb_index_stream_add(
        idx: *mut kvb_index,
        cfg: *const kvb_index_stream_config,
        out: *mut u32,
    ) -> c_int;
    pub fn kvb_index_stream_find(
        idx: *const kvb_index,
        name: *const c_char,
        dp_rank: i64,
        out: *mut u32,
    ) -> c_int;
    pub fn kvb_index_stream_remove(idx: *mut kvb_index, stream: u32) -> c_int;
    pub fn kvb_index_stream_clear(idx: *mut kvb_index, stream: u32, state: kvb_stream_state)
        -> c_int;
    pub fn kvb_index_stream_set_state(
        idx: *mut kvb_index,
        stream: u32,
        state: kvb_stream_state,
    ) -> c_int;
    pub fn kvb_index_apply(
        idx: *mut kvb_index,
        stream: u32,
        events: *const kvb_index_event,
        n: u32,
        seq: i64,
    ) -> c_int;
    pub fn kvb_index_match(
        idx: *mut kvb_index,
        hashes: *const u64,
        n: u32,
        out: *mut kvb_index_result,
        k: u32,
    ) -> c_int;
    pub fn kvb_index_match_tokens(
        idx: *mut kvb_index,
        tokens: *const u32,
        n_tokens: usize,
        lora_name: *const c_char,
        cache_salt: *const c_char,
        out: *mut kvb_index_result,
        k: u32,
        blocks: *mut u32,
    ) -> c_int;
    pub fn kvb_index_stats_get(idx: *const kvb_index, out: *mut kvb_index_stats) -> c_int;
    pub fn kvb_stream_state_name(s: kvb_stream_state) -> *const c_char;
    pub fn kvb_tier_name(t: kvb_tier) -> *const c_char;
}
