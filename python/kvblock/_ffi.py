"""cffi ABI-mode declarations of libkvblock's C API, and the library loader.

Only what the binding uses is declared. Struct layouts must match the C
headers exactly (ABI mode cannot check them): python/tests/test_layout.py
compares every size and offset declared here with what the C compiler says
(make check builds python/tests/layout.c for that). Structures the library
fills (configs, stats) are allocated with slack (see padded()) so that a newer
library with appended fields cannot write past them.

The library is found, in order (see _candidates): $KVBLOCK_LIBRARY (a path);
../../build/ when this package sits in a source checkout; the installed library
through `pkg-config --variable=libdir kvblock`; ctypes.util.find_library;
the system loader ("libkvblock.so.1").
"""
import os

import cffi

CDEF = r"""
typedef struct kvb_hash { uint64_t hi, lo; } kvb_hash;
typedef struct kvb_pool kvb_pool;
typedef struct kvb_registry kvb_registry;

typedef enum { KVB_DUP_ALLOW = 0, KVB_DUP_REJECT } kvb_dup_policy;
typedef enum { KVB_EVICT_LRU = 0, KVB_EVICT_FIFO, KVB_EVICT_MULTI_LRU,
               KVB_EVICT_TINYLFU, KVB_EVICT_LINEAGE, KVB_EVICT_LINEAGE_ARC,
               KVB_EVICT_ADAPTIVE } kvb_evict_policy;

typedef struct kvb_callbacks {
    void *user;
    void (*on_reset)(void *user, uint32_t block_id);
    void (*on_evict)(void *user, kvb_hash hash, uint32_t block_id);
} kvb_callbacks;

typedef struct kvb_allocator {
    void *ctx;
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *ptr, size_t size);
} kvb_allocator;

typedef enum { KVB_EVENT_STORED = 1, KVB_EVENT_REMOVED, KVB_EVENT_CLEARED } kvb_event_type;

typedef struct kvb_event {
    kvb_event_type type;
    uint64_t seq;
    uint32_t n;
    const kvb_hash *hashes;
    const uint32_t *block_ids;
    bool has_parent;
    kvb_hash parent;
    uint32_t block_size;
    const uint32_t *token_ids;
    const char *medium;
} kvb_event;

typedef enum { KVB_EVENT_EMIT_ALL = 0, KVB_EVENT_EMIT_POW2 } kvb_event_emit;

typedef struct kvb_event_config {
    void *user;
    void (*sink)(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n);
    kvb_event_emit emit;
    uint32_t pow2_min, pow2_max;
    uint32_t batch_max;
    uint32_t batch_delay_ms;
    bool (*tokens)(void *user, const kvb_pool *pool, kvb_hash hash, uint32_t block_id,
                   uint32_t *out);
    const char *medium;
    uint32_t max_hashes;
} kvb_event_config;

typedef struct kvb_event_stats {
    uint64_t records, filtered, lost, events, deliveries, last_seq;
    uint32_t waiting;
    uint32_t unresolved_parents;
} kvb_event_stats;

typedef struct kvb_clock {
    void *ctx;
    uint64_t (*now_ms)(void *ctx);
} kvb_clock;

typedef struct kvb_pool_config {
    uint32_t block_count;
    uint32_t block_size;
    kvb_dup_policy dup_policy;
    kvb_evict_policy evict;
    uint8_t multi_lru_thresholds[3];
    bool reset_on_release;
    kvb_registry *registry;
    const char *name;
    kvb_callbacks callbacks;
    const void *evict_ops;
    bool abort_on_misuse;
    kvb_allocator allocator;
    const kvb_event_config *events;
    uint32_t hint_capacity;
    bool priorities;
    kvb_clock clock;
} kvb_pool_config;

typedef struct kvb_mutable  { kvb_pool *pool; uint32_t id; uint32_t gen; } kvb_mutable;
typedef struct kvb_complete { kvb_pool *pool; uint32_t id; uint32_t gen; kvb_hash hash; } kvb_complete;
typedef struct kvb_block    { kvb_pool *pool; uint32_t id; uint32_t gen; kvb_hash hash; } kvb_block;
typedef struct kvb_weak     { kvb_pool *pool; uint32_t id; uint32_t gen; kvb_hash hash; } kvb_weak;
typedef struct kvb_block_addr { uint64_t pool_id; uint32_t block_id; kvb_hash hash; } kvb_block_addr;

typedef struct kvb_stats {
    uint32_t block_count, reset, mutable_, staged, primary, duplicate, inactive;
    uint32_t peak_in_use;
    uint64_t allocations, allocations_from_reset, evictions, registrations,
             duplicates, dedups, stagings, match_requested, match_returned,
             misuse, eager_transitions, allocate_rollbacks, release_noops;
    uint64_t lock_acquisitions, lock_contended, lock_wait_ns, resurrections;
    uint64_t scan_requested, scan_returned;
    uint64_t hint_uses;
    uint32_t hint_hashes, hint_protected;
    uint64_t hint_added, hint_withdrawn, hint_unmatched, hint_rejected, hint_evictions;
    uint32_t retained, retention_timers;
    uint64_t retention_expired, retained_evictions;
} kvb_stats;

typedef struct kvb_registry_config {
    uint32_t capacity;
    kvb_allocator allocator;
} kvb_registry_config;

const char *kvb_strerror(int err);
const char *kvb_err_name(int err);

int      kvb_hash_make(uint64_t current, uint64_t parent, bool has_parent, uint32_t position,
                       kvb_hash *out);
uint32_t kvb_hash_position(kvb_hash h);
uint64_t kvb_hash_current(kvb_hash h);
uint64_t kvb_hash_parent_fragment(kvb_hash h);
bool     kvb_hash_is_parent(kvb_hash parent, kvb_hash child);
int      kvb_hash_extend(kvb_hash parent, uint64_t current, kvb_hash *out);
int      kvb_hash_format(kvb_hash h, char *buf, size_t cap);
uint64_t kvb_hash_salt(const void *salt, size_t len);
uint64_t kvb_hash_block(const uint32_t *tokens, size_t n, uint64_t salt_hash);
uint64_t kvb_hash_chain(uint64_t parent_seq, uint64_t block_hash);
int      kvb_hash_tokens(const uint32_t *tokens, size_t n_tokens, uint32_t block_size,
                         uint64_t salt_hash, kvb_hash *out, size_t out_cap);

void     kvb_pool_config_init(kvb_pool_config *cfg);
int      kvb_pool_create(const kvb_pool_config *cfg, kvb_pool **out);
int      kvb_pool_destroy(kvb_pool *pool);
uint64_t kvb_pool_id(const kvb_pool *pool);
uint32_t kvb_pool_block_count(const kvb_pool *pool);
uint32_t kvb_pool_block_size(const kvb_pool *pool);
const char *kvb_pool_name(const kvb_pool *pool);
const char *kvb_pool_policy_name(const kvb_pool *pool);
uint32_t kvb_pool_available(kvb_pool *pool);
int      kvb_pool_reset_inactive(kvb_pool *pool);
int      kvb_pool_check(kvb_pool *pool);

int kvb_pool_allocate(kvb_pool *pool, uint32_t n, kvb_mutable *out, kvb_hash *evicted,
                      uint32_t *n_evicted);
int kvb_mutable_stage(kvb_mutable *m, kvb_hash hash, kvb_complete *out);
int kvb_pool_stage(kvb_pool *pool, kvb_mutable *in, const kvb_hash *hashes, uint32_t n,
                   kvb_complete *out);
int kvb_mutable_release(kvb_mutable *m);
int kvb_complete_reset(kvb_complete *c, kvb_mutable *out);
int kvb_complete_release(kvb_complete *c);
int kvb_pool_register(kvb_pool *pool, kvb_complete *in, uint32_t n, kvb_block *out);
int kvb_pool_match(kvb_pool *pool, const kvb_hash *hashes, uint32_t n, kvb_block *out);
typedef struct kvb_retention kvb_retention;
int kvb_pool_acquire(kvb_pool *pool, const kvb_hash *hashes, uint32_t n,
                     const kvb_retention *retention, kvb_block *out, kvb_hash *evicted,
                     uint32_t *n_evicted);
int kvb_pool_match_scattered(kvb_pool *pool, const kvb_hash *hashes, uint32_t n,
                             kvb_block *out, bool *hit);
int kvb_pool_scan(kvb_pool *pool, const kvb_hash *hashes, uint32_t n, bool touch,
                  kvb_block *out, bool *hit);
int      kvb_block_clone(const kvb_block *b, kvb_block *out);
int      kvb_block_release(kvb_block *b);
int      kvb_block_release_n(kvb_block *blocks, uint32_t n);
int      kvb_block_set_reset_on_release(kvb_block *b, bool on);
uint32_t kvb_block_use_count(const kvb_block *b);
int      kvb_block_address(const kvb_block *b, kvb_block_addr *out);
void     kvb_block_downgrade(const kvb_block *b, kvb_weak *out);
int      kvb_weak_upgrade(const kvb_weak *w, kvb_block *out);

int kvb_pool_stats(kvb_pool *pool, kvb_stats *out);
int kvb_pool_metrics_text(kvb_pool *pool, char *buf, size_t cap);

void kvb_event_config_init(kvb_event_config *cfg);
int  kvb_pool_events_flush(kvb_pool *pool);
int  kvb_pool_events_stats(kvb_pool *pool, kvb_event_stats *out);

void     kvb_registry_config_init(kvb_registry_config *cfg);
int      kvb_registry_create(const kvb_registry_config *cfg, kvb_registry **out);
int      kvb_registry_destroy(kvb_registry *reg);
int      kvb_registry_present(kvb_registry *reg, const kvb_hash *hashes, uint32_t n,
                              const kvb_pool *pool, bool *out);
uint32_t kvb_registry_frequency(kvb_registry *reg, kvb_hash h);
void     kvb_registry_touch(kvb_registry *reg, kvb_hash h);
"""

# Structures the binding declares, for the layout test: name -> fields checked.
LAYOUT = {
    "kvb_hash": ["hi", "lo"],
    "kvb_mutable": ["pool", "id", "gen"],
    "kvb_complete": ["pool", "id", "gen", "hash"],
    "kvb_block": ["pool", "id", "gen", "hash"],
    "kvb_weak": ["pool", "id", "gen", "hash"],
    "kvb_block_addr": ["pool_id", "block_id", "hash"],
    "kvb_callbacks": ["user", "on_reset", "on_evict"],
    "kvb_allocator": ["ctx", "alloc", "free"],
    "kvb_pool_config": ["block_count", "block_size", "dup_policy", "evict",
                        "multi_lru_thresholds", "reset_on_release", "registry", "name",
                        "callbacks", "evict_ops", "abort_on_misuse", "allocator", "events",
                        "hint_capacity", "priorities", "clock"],
    "kvb_stats": ["block_count", "reset", "mutable_", "staged", "primary", "duplicate",
                  "inactive", "peak_in_use", "allocations", "allocations_from_reset",
                  "evictions", "registrations", "duplicates", "dedups", "stagings",
                  "match_requested", "match_returned", "misuse", "eager_transitions",
                  "allocate_rollbacks", "release_noops", "lock_acquisitions",
                  "lock_contended", "lock_wait_ns", "resurrections", "scan_requested",
                  "scan_returned", "hint_uses", "hint_hashes", "hint_protected", "hint_added",
                  "hint_withdrawn", "hint_unmatched", "hint_rejected", "hint_evictions",
                  "retained", "retention_timers", "retention_expired", "retained_evictions"],
    "kvb_event": ["type", "seq", "n", "hashes", "block_ids", "has_parent", "parent",
                  "block_size", "token_ids", "medium"],
    "kvb_event_config": ["user", "sink", "emit", "pow2_min", "pow2_max", "batch_max",
                         "batch_delay_ms", "tokens", "medium", "max_hashes"],
    "kvb_event_stats": ["records", "filtered", "lost", "events", "deliveries", "last_seq",
                        "waiting", "unresolved_parents"],
    "kvb_registry_config": ["capacity", "allocator"],
}

from . import _ffi_index  # noqa: E402  (the fleet index, subscriber, publisher)

LAYOUT.update(_ffi_index.LAYOUT)

ffi = cffi.FFI()
ffi.cdef(CDEF)
ffi.cdef(_ffi_index.CDEF)


def _candidates():
    """Where to look for libkvblock.so.1, in order. An installed package (pip install
    ./python) has no ../../build: it finds the installed library through pkg-config
    (PKG_CONFIG_PATH, $PKG_CONFIG) or ctypes.util.find_library."""
    env = os.environ.get("KVBLOCK_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.exists(os.path.join(here, "..", "pyproject.toml")):  # a source checkout
        yield os.path.join(here, "..", "..", "build", "libkvblock.so.1")
    try:
        import subprocess
        libdir = subprocess.run([os.environ.get("PKG_CONFIG") or "pkg-config",
                                 "--variable=libdir", "kvblock"], capture_output=True,
                                text=True, timeout=10)
        if libdir.returncode == 0 and libdir.stdout.strip():
            yield os.path.join(libdir.stdout.strip(), "libkvblock.so.1")
    except (OSError, subprocess.SubprocessError):
        pass
    import ctypes.util
    found = ctypes.util.find_library("kvblock")
    if found:
        yield found
    yield "libkvblock.so.1"


def _load():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        try:
            return ffi.dlopen(path), path
        except OSError as e:
            errors.append(f"{path}: {e}")
    raise ImportError("kvblock: cannot load the C library (build it with `make`, install it "
                      "where pkg-config finds it (PKG_CONFIG_PATH), or set KVBLOCK_LIBRARY):"
                      "\n  " + "\n  ".join(errors))


lib, LIBRARY_PATH = _load()


class _Padded:
    """Keeps the backing buffer of a padded struct alive."""

    __slots__ = ("buf", "ptr")

    def __init__(self, ctype):
        self.buf = ffi.new("char[]", ffi.sizeof(ctype) + 512)
        self.ptr = ffi.cast(ctype + " *", self.buf)
