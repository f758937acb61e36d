//! Safe Rust API of kvblock, the paged KV-cache block manager (C library `libkvblock`).
//!
//! * [`Pool`] is `Send + Sync`: share it between threads by reference
//!   (`std::thread::scope`) or in an `Arc`.
//! * Handles ([`Mutable`], [`Complete`], [`Block`]) are owned values whose `Drop`
//!   releases them, and they borrow their pool (`Block<'p>` holds `&'p Pool`): a handle
//!   cannot outlive its pool and cannot be released twice, by construction.
//! * Batch calls work on slices and return batch owners ([`Mutables`], [`Completes`],
//!   [`Blocks`]) whose `Drop` releases the whole batch with one C call.
//! * Errors are [`Error`], an enum named after the errno (`Error::ENOSPC`).
//! * [`Index`] is the fleet index (`kvblock/index.h`): which worker caches which prefix.
//!
//! ```
//! use kvblock::{hash_tokens, Evict, HashesKind, Index, IndexEvent, Pool, PoolConfig, Tier};
//!
//! let pool = Pool::with_config(&PoolConfig { evict: Evict::LineageArc, ..PoolConfig::new(1024) })?;
//! let tokens: Vec<u32> = (0..100).collect();
//! let h = hash_tokens(&tokens, 16, 0)?; // 6 full blocks
//! for req in 1..=2 {
//!     let hit = pool.match_prefix(&h)?; // cached prefix, one lock
//!     let rest = pool.put(&h[hit.len()..])?; // allocate + stage + register
//!     println!("request {}: {} cached, {} new", req, hit.len(), rest.len());
//!     # assert_eq!(hit.len(), if req == 1 { 0 } else { 6 });
//! } // both batches released here (one kvb_block_release_n each); the blocks stay cached
//! pool.close()?; // Ok: no handle can still borrow the pool
//!
//! let idx = Index::new(16)?;
//! let w = idx.add_stream("worker-1", None, HashesKind::Router)?;
//! let rh = idx.hashes(&tokens, None, None)?;
//! idx.apply(w, &[IndexEvent::Stored { hashes: &rh[..4], parent: None, tier: Tier::Device, tokens: &[] }], Some(1))?;
//! let best = idx.match_tokens(&tokens, 1)?;
//! println!("{} holds {} blocks", best[0].worker, best[0].device); // worker-1 holds 4 blocks
//! # assert_eq!(best[0].device, 4);
//! # Ok::<(), kvblock::Error>(())
//! ```
//!
//! A handle cannot be released twice: `Drop` consumes it, and using it afterwards does
//! not compile.
//!
//! ```compile_fail,E0382
//! let pool = kvblock::Pool::new(8).unwrap();
//! let b = pool.put(&kvblock::hash_tokens(&[7u32; 16], 16, 0).unwrap()).unwrap();
//! drop(b);
//! drop(b); // error[E0382]: use of moved value: `b`
//! ```
//!
//! A handle cannot outlive its pool:
//!
//! ```compile_fail,E0597
//! let b;
//! {
//!     let pool = kvblock::Pool::new(8).unwrap();
//!     b = pool.put(&kvblock::hash_tokens(&[7u32; 16], 16, 0).unwrap()).unwrap();
//! } // error[E0597]: `pool` does not live long enough
//! drop(b);
//! ```
//!
//! and a pool cannot be closed while a handle borrows it:
//!
//! ```compile_fail,E0505
//! let pool = kvblock::Pool::new(8).unwrap();
//! let b = pool.put(&kvblock::hash_tokens(&[7u32; 16], 16, 0).unwrap()).unwrap();
//! pool.close().unwrap(); // error[E0505]: cannot move out of `pool` because it is borrowed
//! drop(b);
//! ```
//!
//! The same three programs without the offending line compile and run:
//!
//! ```
//! let pool = kvblock::Pool::new(8).unwrap();
//! let b = pool.put(&kvblock::hash_tokens(&[7u32; 16], 16, 0).unwrap()).unwrap();
//! drop(b);
//! pool.close().unwrap();
//! ```
#![warn(missing_docs)]

use kvblock_sys as sys;
use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::ptr::NonNull;

mod index;
pub use index::{HashesKind, Index, IndexEvent, IndexStats, Match, StreamState, Tier};

/// Raw declarations (`kvblock-sys`), for what this crate does not wrap.
pub use kvblock_sys as ffi;

// ---- errors ---------------------------------------------------------------------------

/// A kvblock error: the negative errno of the C call, by name.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Bad argument or configuration.
    EINVAL,
    /// Not enough free or evictable blocks (nothing was taken).
    ENOSPC,
    /// Stale, released or foreign handle (misuse; counted, nothing changed).
    ESTALE,
    /// Handles still outstanding (pool destroy).
    EBUSY,
    /// Not found.
    ENOENT,
    /// Out of memory.
    ENOMEM,
    /// A count or position past its limit.
    EOVERFLOW,
    /// Already exists.
    EEXIST,
    /// Out of range.
    ERANGE,
    /// Not supported by this build.
    ENOTSUP,
    /// Malformed message or snapshot.
    EBADMSG,
    /// Any other errno (negative value as returned by C).
    Other(i32),
}

const ERRNOS: &[(Error, i32)] = &[
    (Error::EINVAL, 22),
    (Error::ENOSPC, 28),
    (Error::ESTALE, 116),
    (Error::EBUSY, 16),
    (Error::ENOENT, 2),
    (Error::ENOMEM, 12),
    (Error::EOVERFLOW, 75),
    (Error::EEXIST, 17),
    (Error::ERANGE, 34),
    (Error::ENOTSUP, 95),
    (Error::EBADMSG, 74),
];

impl Error {
    /// The error of a negative (or positive) errno value.
    pub fn from_code(rc: i32) -> Error {
        let e = rc.abs();
        ERRNOS.iter().find(|x| x.1 == e).map(|x| x.0).unwrap_or(Error::Other(-e))
    }
    /// The negative errno value, as C returns it.
    pub fn code(&self) -> i32 {
        match self {
            Error::Other(c) => -c.abs(),
            e => -ERRNOS.iter().find(|x| x.0 == *e).unwrap().1,
        }
    }
    /// The errno name ("ENOSPC"), from `kvb_err_name`.
    pub fn name(&self) -> &'static str {
        // SAFETY: kvb_err_name returns a static NUL-terminated string, never NULL.
        unsafe { CStr::from_ptr(sys::kvb_err_name(self.code())) }.to_str().unwrap_or("EUNKNOWN")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: static string.
        let s = unsafe { CStr::from_ptr(sys::kvb_strerror(self.code())) };
        f.write_str(&s.to_string_lossy())
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn check(rc: c_int) -> Result<u32> {
    if rc < 0 {
        Err(Error::from_code(rc))
    } else {
        Ok(rc as u32)
    }
}

pub(crate) fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::EOVERFLOW)
}

// ---- hashes ---------------------------------------------------------------------------

/// A 128-bit positional lineage content hash (`kvb_hash`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub sys::kvb_hash);

impl Hash {
    /// `kvb_hash_make`: the hash of the block at `position` whose 64-bit sequence hash is
    /// `current`, with its parent's sequence hash (None for the first block).
    pub fn make(current: u64, parent: Option<u64>, position: u32) -> Result<Hash> {
        let mut h = Hash::default();
        // SAFETY: out points to a valid kvb_hash.
        check(unsafe {
            sys::kvb_hash_make(current, parent.unwrap_or(0), parent.is_some(), position, &mut h.0)
        })?;
        Ok(h)
    }
    /// The 64-bit sequence hash (the router's key, `kvb_hash_current`).
    pub fn current(&self) -> u64 {
        // SAFETY: pure function.
        unsafe { sys::kvb_hash_current(self.0) }
    }
    /// The block's position in its sequence.
    pub fn position(&self) -> u32 {
        // SAFETY: pure function.
        unsafe { sys::kvb_hash_position(self.0) }
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0 as std::os::raw::c_char; 96];
        // SAFETY: buf has the capacity passed; the result is NUL-terminated.
        unsafe { sys::kvb_hash_format(self.0, buf.as_mut_ptr(), buf.len()) };
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        write!(f, "Hash({})", s.to_string_lossy())
    }
}

/// Content hashes of the full blocks of `tokens` (`kvb_hash_tokens`; a trailing partial
/// block has none). `salt_hash` is 0, or [`hash_salt`] of the request's salt
/// ([`ffi::KVB_HASH_DYNAMO_SEED`] for hashes identical with Dynamo's router).
pub fn hash_tokens(tokens: &[u32], block_size: u32, salt_hash: u64) -> Result<Vec<Hash>> {
    let cap = if block_size == 0 { 0 } else { tokens.len() / block_size as usize };
    let mut out = vec![Hash::default(); cap];
    // SAFETY: tokens and out are valid for the lengths passed; Hash is repr(transparent).
    let n = check(unsafe {
        sys::kvb_hash_tokens(
            tokens.as_ptr(),
            tokens.len(),
            block_size,
            salt_hash,
            out.as_mut_ptr() as *mut sys::kvb_hash,
            cap,
        )
    })?;
    out.truncate(n as usize);
    Ok(out)
}

/// `kvb_hash_salt`: the salt hash of a request's salt bytes.
pub fn hash_salt(salt: &[u8]) -> u64 {
    // SAFETY: salt valid for its length.
    unsafe { sys::kvb_hash_salt(salt.as_ptr() as *const _, salt.len()) }
}

fn as_raw(h: &[Hash]) -> *const sys::kvb_hash {
    h.as_ptr() as *const sys::kvb_hash
}

// ---- pools ----------------------------------------------------------------------------

/// Eviction policy of a pool's cached (inactive) blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evict {
    /// Least recently released first (vLLM's BlockPool).
    Lru,
    /// By first registration; a hit does not refresh.
    Fifo,
    /// Four LRU levels by TinyLFU frequency.
    MultiLru,
    /// W-TinyLFU.
    TinyLfu,
    /// Leaves of the cached prefix tree, least recently released first.
    Lineage,
    /// ARC over the leaves of the prefix tree (best measured hit ratios).
    LineageArc,
}

/// What registering a second copy of cached-or-active content does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DupPolicy {
    /// The copy becomes a duplicate that keeps its primary alive.
    Allow,
    /// The copy is freed and the caller gets the existing primary.
    Reject,
}

/// Configuration of a [`Pool`] (`kvb_pool_config`; events, callbacks, registries and
/// custom backends are not exposed by this crate: use [`ffi`]).
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Number of blocks, required, > 0.
    pub block_count: u32,
    /// Tokens per block, power of two 1..1024 (default 16).
    pub block_size: u32,
    /// Eviction policy (default LRU).
    pub evict: Evict,
    /// Duplicate policy (default Allow).
    pub dup_policy: DupPolicy,
    /// Released blocks go to the free list instead of the cache.
    pub reset_on_release: bool,
    /// Label in the metrics (default "pool").
    pub name: Option<String>,
    /// abort() on handle misuse instead of -ESTALE (debugging).
    pub abort_on_misuse: bool,
}

impl PoolConfig {
    /// Defaults for a pool of `block_count` blocks.
    pub fn new(block_count: u32) -> PoolConfig {
        PoolConfig {
            block_count,
            block_size: 16,
            evict: Evict::Lru,
            dup_policy: DupPolicy::Allow,
            reset_on_release: false,
            name: None,
            abort_on_misuse: false,
        }
    }
}

/// Snapshot of a pool's gauges and counters (`kvb_stats`).
pub type Stats = sys::kvb_stats;

/// One pool of blocks (`kvb_pool`). Thread safe: every method takes `&self`.
pub struct Pool {
    raw: NonNull<sys::kvb_pool>,
}

// SAFETY: every kvb_pool function is safe from any thread (one mutex per pool, atomic
// reference counts); the pool is destroyed only through Drop/close (exclusive).
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

impl Pool {
    /// A pool of `block_count` blocks of 16 tokens with LRU eviction.
    pub fn new(block_count: u32) -> Result<Pool> {
        Pool::with_config(&PoolConfig::new(block_count))
    }

    /// A pool with the given configuration.
    pub fn with_config(c: &PoolConfig) -> Result<Pool> {
        let mut cfg = std::mem::MaybeUninit::<sys::kvb_pool_config>::uninit();
        // SAFETY: kvb_pool_config_init fills every field.
        let mut cfg = unsafe {
            sys::kvb_pool_config_init(cfg.as_mut_ptr());
            cfg.assume_init()
        };
        cfg.block_count = c.block_count;
        cfg.block_size = c.block_size;
        cfg.evict = match c.evict {
            Evict::Lru => sys::KVB_EVICT_LRU,
            Evict::Fifo => sys::KVB_EVICT_FIFO,
            Evict::MultiLru => sys::KVB_EVICT_MULTI_LRU,
            Evict::TinyLfu => sys::KVB_EVICT_TINYLFU,
            Evict::Lineage => sys::KVB_EVICT_LINEAGE,
            Evict::LineageArc => sys::KVB_EVICT_LINEAGE_ARC,
        };
        cfg.dup_policy = match c.dup_policy {
            DupPolicy::Allow => sys::KVB_DUP_ALLOW,
            DupPolicy::Reject => sys::KVB_DUP_REJECT,
        };
        cfg.reset_on_release = c.reset_on_release;
        cfg.abort_on_misuse = c.abort_on_misuse;
        let name = match &c.name {
            Some(n) => Some(CString::new(n.as_str()).map_err(|_| Error::EINVAL)?),
            None => None,
        };
        if let Some(n) = &name {
            cfg.name = n.as_ptr(); // copied by kvb_pool_create
        }
        let mut raw = std::ptr::null_mut();
        // SAFETY: cfg is initialised; raw receives the pool.
        check(unsafe { sys::kvb_pool_create(&cfg, &mut raw) })?;
        Ok(Pool { raw: NonNull::new(raw).ok_or(Error::ENOMEM)? })
    }

    /// The C pool, for calls this crate does not wrap. Do not destroy it.
    pub fn as_ptr(&self) -> *mut sys::kvb_pool {
        self.raw.as_ptr()
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u32 {
        // SAFETY: live pool.
        unsafe { sys::kvb_pool_block_count(self.as_ptr()) }
    }
    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        // SAFETY: live pool.
        unsafe { sys::kvb_pool_block_size(self.as_ptr()) }
    }
    /// Free plus evictable blocks now.
    pub fn available(&self) -> u32 {
        // SAFETY: live pool.
        unsafe { sys::kvb_pool_available(self.as_ptr()) }
    }
    /// The pool's name (metrics label).
    pub fn name(&self) -> String {
        // SAFETY: live pool; the name lives as long as the pool.
        unsafe { CStr::from_ptr(sys::kvb_pool_name(self.as_ptr())) }.to_string_lossy().into_owned()
    }
    /// The eviction policy's name ("lru").
    pub fn policy_name(&self) -> String {
        // SAFETY: static string.
        unsafe { CStr::from_ptr(sys::kvb_pool_policy_name(self.as_ptr())) }
            .to_string_lossy()
            .into_owned()
    }

    /// Allocate `n` mutable blocks, all or nothing (`Error::ENOSPC`: nothing taken).
    pub fn allocate(&self, n: u32) -> Result<Mutables<'_>> {
        let mut raw = vec![sys::kvb_mutable::zeroed(); n as usize];
        // SAFETY: raw has room for n handles.
        check(unsafe {
            sys::kvb_pool_allocate(self.as_ptr(), n, raw.as_mut_ptr(), std::ptr::null_mut(),
                                   std::ptr::null_mut())
        })?;
        Ok(Mutables { raw, _pool: PhantomData })
    }

    /// Like [`allocate`](Pool::allocate), also returning the hashes evicted for it.
    pub fn allocate_evicting(&self, n: u32) -> Result<(Mutables<'_>, Vec<Hash>)> {
        let mut raw = vec![sys::kvb_mutable::zeroed(); n as usize];
        let mut ev = vec![Hash::default(); n as usize];
        let mut n_ev = 0u32;
        // SAFETY: raw and ev have room for n entries.
        check(unsafe {
            sys::kvb_pool_allocate(self.as_ptr(), n, raw.as_mut_ptr(),
                                   ev.as_mut_ptr() as *mut sys::kvb_hash, &mut n_ev)
        })?;
        ev.truncate(n_ev as usize);
        Ok((Mutables { raw, _pool: PhantomData }, ev))
    }

    /// Prefix match: references to the blocks holding `hashes[0..k)` (active, or cached:
    /// resurrected) for the longest such k, under one lock.
    pub fn match_prefix(&self, hashes: &[Hash]) -> Result<Blocks<'_>> {
        let n = len32(hashes.len())?;
        let mut raw = Vec::with_capacity(hashes.len());
        // SAFETY: raw has capacity n; the call initialises its first k entries.
        let k = check(unsafe {
            sys::kvb_pool_match(self.as_ptr(), as_raw(hashes), n, raw.as_mut_ptr())
        })?;
        // SAFETY: k <= n entries were written.
        unsafe { raw.set_len(k as usize) };
        Ok(Blocks { raw, _pool: PhantomData })
    }

    /// [`match_prefix`](Pool::match_prefix) appending to `out` and reusing its capacity
    /// (no allocation once warm: a scheduler loop keeps one `Blocks` and calls
    /// [`Blocks::clear`] between steps). Returns how many blocks matched.
    pub fn match_prefix_into<'p>(&'p self, hashes: &[Hash], out: &mut Blocks<'p>) -> Result<usize> {
        let n = len32(hashes.len())?;
        let at = out.raw.len();
        out.raw.reserve(hashes.len());
        // SAFETY: out.raw has spare capacity for n entries from `at`; k <= n are written.
        let k = check(unsafe {
            sys::kvb_pool_match(self.as_ptr(), as_raw(hashes), n, out.raw.as_mut_ptr().add(at))
        })?;
        unsafe { out.raw.set_len(at + k as usize) };
        Ok(k as usize)
    }

    /// Look every hash up independently: `out[i]` is `Some` for a hit.
    pub fn match_scattered(&self, hashes: &[Hash]) -> Result<Vec<Option<Block<'_>>>> {
        let n = len32(hashes.len())?;
        let mut raw = vec![sys::kvb_block::zeroed(); hashes.len()];
        let mut hit = vec![false; hashes.len()];
        // SAFETY: raw and hit have n entries.
        check(unsafe {
            sys::kvb_pool_match_scattered(self.as_ptr(), as_raw(hashes), n, raw.as_mut_ptr(),
                                          hit.as_mut_ptr())
        })?;
        Ok(raw
            .into_iter()
            .zip(hit)
            .map(|(b, h)| if h { Some(Block { raw: b, _pool: PhantomData }) } else { None })
            .collect())
    }

    /// Allocate, stage and register one block per hash (a request's new blocks), all or
    /// nothing.
    pub fn put(&self, hashes: &[Hash]) -> Result<Blocks<'_>> {
        self.allocate(len32(hashes.len())?)?.stage(hashes)?.register()
    }

    /// Register staged blocks (`kvb_pool_register`), under one lock.
    pub fn register<'p>(&'p self, c: Completes<'p>) -> Result<Blocks<'p>> {
        c.register()
    }

    /// Drop the whole cache (every inactive block); returns how many were dropped.
    pub fn reset_inactive(&self) -> Result<u32> {
        // SAFETY: live pool.
        check(unsafe { sys::kvb_pool_reset_inactive(self.as_ptr()) })
    }

    /// A coherent snapshot of the gauges and counters.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        // SAFETY: live pool, valid out.
        unsafe { sys::kvb_pool_stats(self.as_ptr(), &mut s) };
        s
    }

    /// Check every invariant (`kvb_pool_check`); for tests.
    pub fn check(&self) -> Result<()> {
        // SAFETY: live pool.
        check(unsafe { sys::kvb_pool_check(self.as_ptr()) }).map(|_| ())
    }

    /// Prometheus text exposition of the stats.
    pub fn metrics_text(&self) -> String {
        // SAFETY: sizing call with a NULL buffer and cap 0, then the real one.
        let need = unsafe { sys::kvb_pool_metrics_text(self.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            return String::new();
        }
        let mut buf = vec![0u8; need as usize + 64];
        let n = unsafe {
            sys::kvb_pool_metrics_text(self.as_ptr(), buf.as_mut_ptr() as *mut _, buf.len())
        };
        buf.truncate(n.max(0) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Destroy the pool now and report the result (Drop does the same silently). Only
    /// `Error::EBUSY` is possible, when handles were leaked with `mem::forget`; the pool
    /// is then leaked too.
    pub fn close(self) -> Result<()> {
        let raw = self.raw;
        std::mem::forget(self);
        // SAFETY: we owned the pool; no borrow of it is alive (close takes self).
        check(unsafe { sys::kvb_pool_destroy(raw.as_ptr()) }).map(|_| ())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: no handle borrows the pool any more (lifetimes); a leaked one
        // (mem::forget) makes destroy refuse with -EBUSY and the pool is leaked.
        let rc = unsafe { sys::kvb_pool_destroy(self.as_ptr()) };
        if rc != 0 {
            eprintln!("kvblock: pool not destroyed ({}): handles were leaked", Error::from_code(rc));
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pool({}, {} blocks, {})", self.name(), self.block_count(), self.policy_name())
    }
}

// ---- single handles --------------------------------------------------------------------

/// A block being filled (`kvb_mutable`): stage it with its content hash, or drop it
/// (back to the free list).
pub struct Mutable<'p> {
    raw: sys::kvb_mutable,
    _pool: PhantomData<&'p Pool>,
}

/// A filled block with its hash, not yet findable (`kvb_complete`): register it, or
/// drop it (back to the free list, never cached).
pub struct Complete<'p> {
    raw: sys::kvb_complete,
    _pool: PhantomData<&'p Pool>,
}

/// A reference to a registered block (`kvb_block`). Dropping it releases the
/// reference; the last release leaves the block cached (unless reset-on-release).
pub struct Block<'p> {
    raw: sys::kvb_block,
    _pool: PhantomData<&'p Pool>,
}

/// A weak reference (`kvb_weak`): keeps nothing alive, needs no release.
#[derive(Clone, Copy)]
pub struct Weak<'p> {
    raw: sys::kvb_weak,
    _pool: PhantomData<&'p Pool>,
}

// SAFETY: every handle operation is safe from any thread (C header: releases, clones and
// upgrades are lock-free or take the pool lock); a handle value is only used through
// &self (read-only) or by value.
unsafe impl Send for Mutable<'_> {}
unsafe impl Sync for Mutable<'_> {}
unsafe impl Send for Complete<'_> {}
unsafe impl Sync for Complete<'_> {}
unsafe impl Send for Block<'_> {}
unsafe impl Sync for Block<'_> {}
unsafe impl Send for Weak<'_> {}
unsafe impl Sync for Weak<'_> {}

impl<'p> Mutable<'p> {
    /// Physical block id (where the runtime writes the KV data).
    pub fn id(&self) -> u32 {
        self.raw.id
    }
    /// Give the block its content hash (MUTABLE -> STAGED). On error the block is
    /// released.
    pub fn stage(mut self, hash: Hash) -> Result<Complete<'p>> {
        let mut out = sys::kvb_complete::zeroed();
        // SAFETY: live handle; consumed (cleared) on success.
        check(unsafe { sys::kvb_mutable_stage(&mut self.raw, hash.0, &mut out) })?;
        Ok(Complete { raw: out, _pool: PhantomData })
    }
}

impl Drop for Mutable<'_> {
    fn drop(&mut self) {
        if !self.raw.pool.is_null() {
            // SAFETY: a live handle we own; released exactly once.
            unsafe { sys::kvb_mutable_release(&mut self.raw) };
        }
    }
}

impl<'p> Complete<'p> {
    /// Physical block id.
    pub fn id(&self) -> u32 {
        self.raw.id
    }
    /// The content hash it was staged with.
    pub fn hash(&self) -> Hash {
        Hash(self.raw.hash)
    }
    /// Make it findable: a reference to the registered block (or, under
    /// `DupPolicy::Reject`, to the existing primary).
    pub fn register(mut self) -> Result<Block<'p>> {
        let mut out = sys::kvb_block::zeroed();
        let pool = self.raw.pool;
        // SAFETY: live staged handle; consumed on success.
        check(unsafe { sys::kvb_pool_register(pool, &mut self.raw, 1, &mut out) })?;
        Ok(Block { raw: out, _pool: PhantomData })
    }
    /// Undo staging: back to a mutable block (the hash is forgotten).
    pub fn reset(mut self) -> Result<Mutable<'p>> {
        let mut out = sys::kvb_mutable::zeroed();
        // SAFETY: live staged handle; consumed on success.
        check(unsafe { sys::kvb_complete_reset(&mut self.raw, &mut out) })?;
        Ok(Mutable { raw: out, _pool: PhantomData })
    }
}

impl Drop for Complete<'_> {
    fn drop(&mut self) {
        if !self.raw.pool.is_null() {
            // SAFETY: a live handle we own; released exactly once.
            unsafe { sys::kvb_complete_release(&mut self.raw) };
        }
    }
}

impl<'p> Block<'p> {
    /// Physical block id.
    pub fn id(&self) -> u32 {
        self.raw.id
    }
    /// Content hash.
    pub fn hash(&self) -> Hash {
        Hash(self.raw.hash)
    }
    /// References held on the block (including one per live duplicate of a primary).
    pub fn use_count(&self) -> u32 {
        // SAFETY: live handle.
        unsafe { sys::kvb_block_use_count(&self.raw) }
    }
    /// One more reference (lock-free); `Error::EOVERFLOW` at 2^32-2 references.
    pub fn try_clone(&self) -> Result<Block<'p>> {
        let mut out = sys::kvb_block::zeroed();
        // SAFETY: live handle.
        check(unsafe { sys::kvb_block_clone(&self.raw, &mut out) })?;
        Ok(Block { raw: out, _pool: PhantomData })
    }
    /// Whether the block goes to the free list instead of the cache on its last
    /// release (applies to the block, all references).
    pub fn set_reset_on_release(&self, on: bool) -> Result<()> {
        let mut copy = self.raw; // the C call does not modify the handle
        // SAFETY: live handle.
        check(unsafe { sys::kvb_block_set_reset_on_release(&mut copy, on) }).map(|_| ())
    }
    /// A weak reference to the same block.
    pub fn downgrade(&self) -> Weak<'p> {
        let mut w = sys::kvb_weak::zeroed();
        // SAFETY: touches only its arguments.
        unsafe { sys::kvb_block_downgrade(&self.raw, &mut w) };
        Weak { raw: w, _pool: PhantomData }
    }
    /// The raw handle (still owned by `self`).
    pub fn as_raw(&self) -> &sys::kvb_block {
        &self.raw
    }
}

impl Clone for Block<'_> {
    /// Panics only at 2^32-2 references on one block (use `try_clone`).
    fn clone(&self) -> Self {
        self.try_clone().expect("kvb_block_clone")
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        if !self.raw.pool.is_null() {
            // SAFETY: a live reference we own; released exactly once.
            unsafe { sys::kvb_block_release(&mut self.raw) };
        }
    }
}

impl fmt::Debug for Block<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Block(id {}, {:?})", self.raw.id, self.hash())
    }
}

impl<'p> Weak<'p> {
    /// Content hash.
    pub fn hash(&self) -> Hash {
        Hash(self.raw.hash)
    }
    /// A live reference: the same block while referenced, else the block holding the
    /// hash (active or cached), else `Error::ENOENT`.
    pub fn upgrade(&self) -> Result<Block<'p>> {
        let mut out = sys::kvb_block::zeroed();
        // SAFETY: a weak handle of a live pool (its lifetime).
        check(unsafe { sys::kvb_weak_upgrade(&self.raw, &mut out) })?;
        Ok(Block { raw: out, _pool: PhantomData })
    }
}

// ---- batches ---------------------------------------------------------------------------

/// A batch of mutable blocks (from [`Pool::allocate`]); dropping it releases them.
pub struct Mutables<'p> {
    raw: Vec<sys::kvb_mutable>,
    _pool: PhantomData<&'p Pool>,
}

/// A batch of staged blocks; dropping it releases them.
pub struct Completes<'p> {
    raw: Vec<sys::kvb_complete>,
    _pool: PhantomData<&'p Pool>,
}

/// A batch of block references; dropping it releases them all with one
/// `kvb_block_release_n` (the pool lock at most once).
pub struct Blocks<'p> {
    raw: Vec<sys::kvb_block>,
    _pool: PhantomData<&'p Pool>,
}

// SAFETY: as for the single handles.
unsafe impl Send for Mutables<'_> {}
unsafe impl Sync for Mutables<'_> {}
unsafe impl Send for Completes<'_> {}
unsafe impl Sync for Completes<'_> {}
unsafe impl Send for Blocks<'_> {}
unsafe impl Sync for Blocks<'_> {}

impl<'p> Mutables<'p> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.raw.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Physical block ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.raw.iter().map(|m| m.id).collect()
    }
    /// Stage every block with its hash (`hashes.len()` must equal `len()`), all or
    /// nothing under one lock. On error the blocks are released.
    pub fn stage(mut self, hashes: &[Hash]) -> Result<Completes<'p>> {
        if hashes.len() != self.raw.len() {
            return Err(Error::EINVAL);
        }
        if self.raw.is_empty() {
            return Ok(Completes { raw: Vec::new(), _pool: PhantomData });
        }
        let mut out = vec![sys::kvb_complete::zeroed(); self.raw.len()];
        let pool = self.raw[0].pool;
        // SAFETY: live handles of `pool`; consumed (cleared) on success.
        check(unsafe {
            sys::kvb_pool_stage(pool, self.raw.as_mut_ptr(), as_raw(hashes),
                                len32(hashes.len())?, out.as_mut_ptr())
        })?;
        Ok(Completes { raw: out, _pool: PhantomData })
    }
    /// The blocks as single handles.
    pub fn into_vec(mut self) -> Vec<Mutable<'p>> {
        std::mem::take(&mut self.raw)
            .into_iter()
            .map(|raw| Mutable { raw, _pool: PhantomData })
            .collect()
    }
}

impl Drop for Mutables<'_> {
    fn drop(&mut self) {
        for m in self.raw.iter_mut().filter(|m| !m.pool.is_null()) {
            // SAFETY: live handles we own.
            unsafe { sys::kvb_mutable_release(m) };
        }
    }
}

impl<'p> Completes<'p> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.raw.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Register every block under one lock (`kvb_pool_register`).
    pub fn register(mut self) -> Result<Blocks<'p>> {
        if self.raw.is_empty() {
            return Ok(Blocks { raw: Vec::new(), _pool: PhantomData });
        }
        let mut out = vec![sys::kvb_block::zeroed(); self.raw.len()];
        let pool = self.raw[0].pool;
        // SAFETY: live handles of `pool`; consumed on success.
        check(unsafe {
            sys::kvb_pool_register(pool, self.raw.as_mut_ptr(), len32(self.raw.len())?,
                                   out.as_mut_ptr())
        })?;
        Ok(Blocks { raw: out, _pool: PhantomData })
    }
    /// The blocks as single handles.
    pub fn into_vec(mut self) -> Vec<Complete<'p>> {
        std::mem::take(&mut self.raw)
            .into_iter()
            .map(|raw| Complete { raw, _pool: PhantomData })
            .collect()
    }
}

impl Drop for Completes<'_> {
    fn drop(&mut self) {
        for c in self.raw.iter_mut().filter(|c| !c.pool.is_null()) {
            // SAFETY: live handles we own.
            unsafe { sys::kvb_complete_release(c) };
        }
    }
}

impl<'p> Blocks<'p> {
    /// An empty batch.
    pub fn new() -> Blocks<'p> {
        Blocks { raw: Vec::new(), _pool: PhantomData }
    }
    /// Number of references.
    pub fn len(&self) -> usize {
        self.raw.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Physical block ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.raw.iter().map(|b| b.id).collect()
    }
    /// Content hashes, in order.
    pub fn hashes(&self) -> Vec<Hash> {
        self.raw.iter().map(|b| Hash(b.hash)).collect()
    }
    /// Append one reference.
    pub fn push(&mut self, mut b: Block<'p>) {
        self.raw.push(std::mem::replace(&mut b.raw, sys::kvb_block::zeroed()));
    }
    /// Append another batch.
    pub fn append(&mut self, mut other: Blocks<'p>) {
        self.raw.append(&mut other.raw);
    }
    /// Split off the references from `at` on into a batch of their own.
    pub fn split_off(&mut self, at: usize) -> Blocks<'p> {
        Blocks { raw: self.raw.split_off(at), _pool: PhantomData }
    }
    /// The references as single handles.
    pub fn into_vec(mut self) -> Vec<Block<'p>> {
        std::mem::take(&mut self.raw)
            .into_iter()
            .map(|raw| Block { raw, _pool: PhantomData })
            .collect()
    }
    /// Release every reference now and keep the capacity for reuse
    /// ([`Pool::match_prefix_into`]).
    pub fn clear(&mut self) -> Result<()> {
        let r = release_n(&mut self.raw);
        self.raw.clear();
        r
    }
    /// Release every reference now (what Drop does), reporting the C result.
    pub fn release(mut self) -> Result<()> {
        let mut raw = std::mem::take(&mut self.raw);
        release_n(&mut raw)
    }
}

impl Default for Blocks<'_> {
    fn default() -> Self {
        Blocks::new()
    }
}

fn release_n(raw: &mut [sys::kvb_block]) -> Result<()> {
    // Batches may mix pools (append/push): release runs of one pool at a time.
    let mut i = 0;
    let mut res = Ok(());
    while i < raw.len() {
        let pool = raw[i].pool;
        let mut j = i + 1;
        while j < raw.len() && raw[j].pool == pool {
            j += 1;
        }
        // SAFETY: live references we own, released exactly once.
        if let Err(e) = check(unsafe { sys::kvb_block_release_n(raw[i..j].as_mut_ptr(), (j - i) as u32) }) {
            res = Err(e);
        }
        i = j;
    }
    res
}

impl Drop for Blocks<'_> {
    fn drop(&mut self) {
        let _ = release_n(&mut self.raw);
    }
}

impl<'p> FromIterator<Block<'p>> for Blocks<'p> {
    fn from_iter<I: IntoIterator<Item = Block<'p>>>(iter: I) -> Self {
        let mut b = Blocks::new();
        for x in iter {
            b.push(x);
        }
        b
    }
}

impl fmt::Debug for Blocks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blocks{:?}", self.ids())
    }
}

impl fmt::Debug for Mutables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mutables{:?}", self.ids())
    }
}

impl fmt::Debug for Completes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Completes{:?}", self.raw.iter().map(|c| c.id).collect::<Vec<_>>())
    }
}

impl fmt::Debug for Mutable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mutable(id {})", self.raw.id)
    }
}

impl fmt::Debug for Complete<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Complete(id {}, {:?})", self.raw.id, self.hash())
    }
}

impl fmt::Debug for Weak<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Weak(id {}, {:?})", self.raw.id, self.hash())
    }
}
