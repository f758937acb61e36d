//! The fleet index (`kvblock/index.h`): which worker caches which prefix, built from
//! every engine's KV events, asked by a router before it places a request.
use crate::{check, len32, sys, Error, Result};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr::NonNull;

/// Memory tier of an indexed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// GPU memory.
    Device,
    /// Host memory.
    Host,
    /// Disk or remote storage.
    Disk,
}

impl Tier {
    fn raw(self) -> sys::kvb_tier {
        match self {
            Tier::Device => sys::KVB_TIER_DEVICE,
            Tier::Host => sys::KVB_TIER_HOST,
            Tier::Disk => sys::KVB_TIER_DISK,
        }
    }
}

/// What a stream's block hashes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashesKind {
    /// Router hashes already (kvblock publishers).
    Router,
    /// The engine's own hashes (vLLM, SGLang): recomputed from the events' tokens.
    Engine,
}

/// State of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Current: matched.
    Live,
    /// Cleared after a gap it could not replay: matched with what it holds since.
    Resyncing,
    /// Replica cut off from its source: still matched.
    Lagging,
    /// Transport down past stale_after: not matched.
    Stale,
}

impl StreamState {
    fn from_raw(s: sys::kvb_stream_state) -> StreamState {
        match s {
            sys::KVB_STREAM_RESYNCING => StreamState::Resyncing,
            sys::KVB_STREAM_LAGGING => StreamState::Lagging,
            sys::KVB_STREAM_STALE => StreamState::Stale,
            _ => StreamState::Live,
        }
    }
}

/// One normalized KV event for [`Index::apply`].
#[derive(Clone, Copy, Debug)]
pub enum IndexEvent<'a> {
    /// Blocks stored in a tier. On `Router` streams `hashes` are router hashes and
    /// `tokens` may be empty; on `Engine` streams `tokens` holds
    /// `hashes.len() * block_size` token ids. `parent`: the first block's parent.
    Stored {
        /// Block hashes.
        hashes: &'a [u64],
        /// The first block's parent hash, if any.
        parent: Option<u64>,
        /// Tier.
        tier: Tier,
        /// Token ids (Engine streams).
        tokens: &'a [u32],
    },
    /// Blocks removed from a tier.
    Removed {
        /// Block hashes.
        hashes: &'a [u64],
        /// Tier.
        tier: Tier,
    },
    /// Everything the stream holds is gone.
    Cleared,
}

/// One worker's answer to a match.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// Stream id.
    pub stream: u32,
    /// Worker name.
    pub worker: String,
    /// Data-parallel rank (None when the engine sends none).
    pub dp_rank: Option<i64>,
    /// Longest prefix held entirely on device.
    pub device: u32,
    /// Longest prefix on device or host, minus `device`.
    pub host: u32,
    /// Longest prefix on any tier, minus `device + host`.
    pub disk: u32,
    /// Weighted score (tier weights).
    pub score: f64,
    /// The stream's entries (tie-break: least loaded first).
    pub entries: u64,
    /// Stream state.
    pub state: StreamState,
}

/// Counters of the whole index (`kvb_index_stats`).
pub type IndexStats = sys::kvb_index_stats;

/// The fleet index (`kvb_index`). Thread safe: writers are serialised inside, matches
/// run concurrently with them.
pub struct Index {
    raw: NonNull<sys::kvb_index>,
}

// SAFETY: every kvb_index function is safe from any thread except destroy, which only
// Drop calls (exclusive access).
unsafe impl Send for Index {}
unsafe impl Sync for Index {}

fn opt_cstring(s: Option<&str>) -> Result<Option<CString>> {
    s.map(|s| CString::new(s).map_err(|_| Error::EINVAL)).transpose()
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null())
}

impl Index {
    /// An empty index with router block size `block_size` and Dynamo's default seed.
    pub fn new(block_size: u32) -> Result<Index> {
        Index::with_seed(block_size, sys::KVB_HASH_DYNAMO_SEED)
    }

    /// An empty index with the given block size and chain seed of unsalted blocks.
    pub fn with_seed(block_size: u32, seed: u64) -> Result<Index> {
        let mut cfg = std::mem::MaybeUninit::<sys::kvb_index_config>::uninit();
        // SAFETY: config_init fills every field.
        let mut cfg = unsafe {
            sys::kvb_index_config_init(cfg.as_mut_ptr());
            cfg.assume_init()
        };
        cfg.block_size = block_size;
        cfg.seed = seed;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid config and out.
        check(unsafe { sys::kvb_index_create(&cfg, &mut raw) })?;
        Ok(Index { raw: NonNull::new(raw).ok_or(Error::ENOMEM)? })
    }

    /// The C index, for calls this crate does not wrap. Do not destroy it.
    pub fn as_ptr(&self) -> *mut sys::kvb_index {
        self.raw.as_ptr()
    }

    /// Add a stream (worker, dp_rank): its id. `Error::EEXIST` when it exists.
    pub fn add_stream(&self, worker: &str, dp_rank: Option<i64>, kind: HashesKind) -> Result<u32> {
        let name = CString::new(worker).map_err(|_| Error::EINVAL)?;
        let cfg = sys::kvb_index_stream_config {
            name: name.as_ptr(),
            dp_rank: dp_rank.unwrap_or(sys::KVB_INDEX_NO_RANK),
            hashes: match kind {
                HashesKind::Router => sys::KVB_INDEX_HASHES_ROUTER,
                HashesKind::Engine => sys::KVB_INDEX_HASHES_ENGINE,
            },
            block_size: 0,
        };
        let mut id = 0u32;
        // SAFETY: valid config (name copied) and out.
        check(unsafe { sys::kvb_index_stream_add(self.as_ptr(), &cfg, &mut id) })?;
        Ok(id)
    }

    /// The id of stream (worker, dp_rank); `Error::ENOENT` when absent.
    pub fn find_stream(&self, worker: &str, dp_rank: Option<i64>) -> Result<u32> {
        let name = CString::new(worker).map_err(|_| Error::EINVAL)?;
        let mut id = 0u32;
        // SAFETY: valid arguments.
        check(unsafe {
            sys::kvb_index_stream_find(self.as_ptr(), name.as_ptr(),
                                       dp_rank.unwrap_or(sys::KVB_INDEX_NO_RANK), &mut id)
        })?;
        Ok(id)
    }

    /// Remove a stream and its entries.
    pub fn remove_stream(&self, stream: u32) -> Result<()> {
        // SAFETY: live index.
        check(unsafe { sys::kvb_index_stream_remove(self.as_ptr(), stream) }).map(|_| ())
    }

    /// Apply a batch of events to one stream, in order, and record `seq` as its last
    /// applied sequence number (`None`: keep it).
    pub fn apply(&self, stream: u32, events: &[IndexEvent<'_>], seq: Option<i64>) -> Result<()> {
        let raw: Vec<sys::kvb_index_event> = events
            .iter()
            .map(|e| {
                let mut r = sys::kvb_index_event {
                    type_: sys::KVB_INDEX_EV_CLEARED,
                    tier: sys::KVB_TIER_DEVICE,
                    n_hashes: 0,
                    hashes: std::ptr::null(),
                    has_parent: false,
                    parent: 0,
                    tokens: std::ptr::null(),
                    n_tokens: 0,
                    block_size: 0,
                    salt_key: 0,
                };
                match *e {
                    IndexEvent::Stored { hashes, parent, tier, tokens } => {
                        r.type_ = sys::KVB_INDEX_EV_STORED;
                        r.tier = tier.raw();
                        r.n_hashes = len32(hashes.len())?;
                        r.hashes = hashes.as_ptr();
                        r.has_parent = parent.is_some();
                        r.parent = parent.unwrap_or(0);
                        if !tokens.is_empty() {
                            r.tokens = tokens.as_ptr();
                            r.n_tokens = len32(tokens.len())?;
                        }
                    }
                    IndexEvent::Removed { hashes, tier } => {
                        r.type_ = sys::KVB_INDEX_EV_REMOVED;
                        r.tier = tier.raw();
                        r.n_hashes = len32(hashes.len())?;
                        r.hashes = hashes.as_ptr();
                    }
                    IndexEvent::Cleared => {}
                }
                Ok(r)
            })
            .collect::<Result<_>>()?;
        // SAFETY: the events borrow slices that outlive the call.
        check(unsafe {
            sys::kvb_index_apply(self.as_ptr(), stream, raw.as_ptr(), len32(raw.len())?,
                                 seq.unwrap_or(-1))
        })
        .map(|_| ())
    }

    /// Router hashes of a request (its full blocks), with an optional LoRA name and
    /// cache salt.
    pub fn hashes(&self, tokens: &[u32], lora: Option<&str>, salt: Option<&str>) -> Result<Vec<u64>> {
        let (l, s) = (opt_cstring(lora)?, opt_cstring(salt)?);
        let cap = tokens.len(); // at most one hash per token (block size >= 1)
        let mut out = vec![0u64; cap];
        // SAFETY: out has room for cap hashes.
        let n = check(unsafe {
            sys::kvb_index_hashes(self.as_ptr(), tokens.as_ptr(), tokens.len(), opt_ptr(&l),
                                  opt_ptr(&s), out.as_mut_ptr(), cap)
        })?;
        out.truncate(n as usize);
        Ok(out)
    }

    /// Prefix match of a request's router hashes against every matched stream: up to
    /// `k` results, best first (score, then fewest entries, then name and rank).
    pub fn match_hashes(&self, hashes: &[u64], k: usize) -> Result<Vec<Match>> {
        let mut out = Vec::with_capacity(k);
        let kk = len32(k)?;
        // SAFETY: out has capacity k; the call writes min(result, k) entries.
        let n = check(unsafe {
            sys::kvb_index_match(self.as_ptr(), hashes.as_ptr(), len32(hashes.len())?,
                                 out.as_mut_ptr(), kk)
        })?;
        unsafe { out.set_len((n as usize).min(k)) };
        Ok(out.iter().map(convert).collect())
    }

    /// [`hashes`](Index::hashes) then [`match_hashes`](Index::match_hashes) in one C call
    /// (plain text: no LoRA, no cache salt).
    pub fn match_tokens(&self, tokens: &[u32], k: usize) -> Result<Vec<Match>> {
        self.match_tokens_with(tokens, None, None, k).map(|r| r.0)
    }

    /// `match_tokens` with a LoRA name and a cache salt; also returns the number of full
    /// blocks of the request.
    pub fn match_tokens_with(&self, tokens: &[u32], lora: Option<&str>, salt: Option<&str>,
                             k: usize) -> Result<(Vec<Match>, u32)> {
        let (l, s) = (opt_cstring(lora)?, opt_cstring(salt)?);
        let mut out = Vec::with_capacity(k);
        let mut blocks = 0u32;
        // SAFETY: out has capacity k; the call writes min(result, k) entries.
        let n = check(unsafe {
            sys::kvb_index_match_tokens(self.as_ptr(), tokens.as_ptr(), tokens.len(),
                                        opt_ptr(&l), opt_ptr(&s), out.as_mut_ptr(),
                                        len32(k)?, &mut blocks)
        })?;
        unsafe { out.set_len((n as usize).min(k)) };
        Ok((out.iter().map(convert).collect(), blocks))
    }

    /// Counters of the whole index.
    pub fn stats(&self) -> IndexStats {
        let mut s = IndexStats::default();
        // SAFETY: valid out.
        unsafe { sys::kvb_index_stats_get(self.as_ptr(), &mut s) };
        s
    }
}

fn convert(r: &sys::kvb_index_result) -> Match {
    // SAFETY: worker is NUL-terminated within KVB_INDEX_NAME_MAX.
    let worker = unsafe { CStr::from_ptr(r.worker.as_ptr()) }.to_string_lossy().into_owned();
    Match {
        stream: r.stream,
        worker,
        dp_rank: if r.dp_rank == sys::KVB_INDEX_NO_RANK { None } else { Some(r.dp_rank) },
        device: r.device,
        host: r.host,
        disk: r.disk,
        score: r.score,
        entries: r.entries,
        state: StreamState::from_raw(r.state),
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        // SAFETY: exclusive access; nothing borrows the index any more.
        unsafe { sys::kvb_index_destroy(self.as_ptr()) };
    }
}
