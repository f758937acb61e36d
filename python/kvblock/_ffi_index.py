"""cffi declarations of the fleet index (kvblock/index.h), its ZeroMQ subscriber
(kvblock/subscriber.h) and the ZeroMQ publisher (kvblock/publisher.h).

_ffi.py adds CDEF to its FFI before it loads the library and merges LAYOUT into
its own: python/tests/test_layout.py checks every struct below against the C
compiler's view (python/tests/layout.c prints it). Array lengths are written as
numbers (KVB_TIER_COUNT = 3, KVB_DROP_COUNT = 11, KVB_COUNT_COUNT = 4,
KVB_INDEX_NAME_MAX = 64): the layout test fails if a header changes them.
This module must not import _ffi (it is imported by it).
"""

CDEF = r"""
typedef struct kvb_index kvb_index;

typedef enum { KVB_TIER_DEVICE = 0, KVB_TIER_HOST = 1, KVB_TIER_DISK = 2,
               KVB_TIER_COUNT = 3 } kvb_tier;
typedef enum { KVB_INDEX_HASHES_ROUTER = 0, KVB_INDEX_HASHES_ENGINE = 1 } kvb_index_hashes_kind;
typedef enum { KVB_WIRE_VLLM = 0, KVB_WIRE_SGLANG = 1, KVB_WIRE_KVBLOCK = 2 } kvb_wire_kind;
typedef enum { KVB_STREAM_LIVE = 0, KVB_STREAM_RESYNCING = 1, KVB_STREAM_LAGGING = 2,
               KVB_STREAM_STALE = 3 } kvb_stream_state;
typedef enum { KVB_DROP_MALFORMED = 0, KVB_DROP_UNKNOWN_TYPE, KVB_DROP_GROUP,
               KVB_DROP_MEDIUM, KVB_DROP_MULTIMODAL, KVB_DROP_UNKNOWN_PARENT,
               KVB_DROP_NO_TOKENS, KVB_DROP_BLOCK_SIZE, KVB_DROP_CAPACITY,
               KVB_DROP_UNKNOWN_BLOCK, KVB_DROP_DUPLICATE, KVB_DROP_COUNT } kvb_drop_reason;
typedef enum { KVB_COUNT_GAPS = 0, KVB_COUNT_REPLAYS, KVB_COUNT_RESTARTS, KVB_COUNT_CLEARS,
               KVB_COUNT_COUNT } kvb_stream_counter;
typedef enum { KVB_INDEX_EV_STORED = 1, KVB_INDEX_EV_REMOVED = 2,
               KVB_INDEX_EV_CLEARED = 3 } kvb_index_ev_type;

typedef struct kvb_index_config {
    uint32_t block_size;
    uint64_t seed;
    double tier_weight[3];
    double stale_after_s;
    double drop_after_s;
    uint32_t max_streams;
    uint32_t max_entries_per_stream;
    uint32_t shards;
    kvb_allocator allocator;
} kvb_index_config;

typedef struct kvb_index_stream_config {
    const char *name;
    int64_t dp_rank;
    kvb_index_hashes_kind hashes;
    uint32_t block_size;
} kvb_index_stream_config;

typedef struct kvb_index_event {
    kvb_index_ev_type type;
    kvb_tier tier;
    uint32_t n_hashes;
    const uint64_t *hashes;
    bool has_parent;
    uint64_t parent;
    const uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t block_size;
    uint64_t salt_key;
} kvb_index_event;

typedef struct kvb_index_batch {
    double ts;
    int64_t dp_rank;
    uint32_t n_events;
    kvb_index_event *events;
    uint32_t dropped[11];
    void *priv_;
} kvb_index_batch;

typedef struct kvb_index_result {
    uint32_t stream;
    int64_t dp_rank;
    uint32_t device;
    uint32_t host;
    uint32_t disk;
    double score;
    uint64_t entries;
    kvb_stream_state state;
    char worker[64];
} kvb_index_result;

typedef struct kvb_index_stream_info {
    uint32_t stream;
    char worker[64];
    int64_t dp_rank;
    kvb_index_hashes_kind hashes;
    uint32_t block_size;
    kvb_stream_state state;
    int64_t last_seq;
    uint64_t batches;
    uint64_t events;
    uint64_t counters[4];
    uint64_t dropped[11];
    uint64_t entries;
    uint64_t engine_map;
    int64_t last_heard_ns;
} kvb_index_stream_info;

typedef struct kvb_index_stats {
    uint32_t streams;
    uint64_t keys;
    uint64_t entries;
    uint64_t memory_bytes;
    uint64_t batches;
    uint64_t events;
    uint64_t block_ops;
    uint64_t matches;
    uint64_t matched_blocks;
} kvb_index_stats;

void     kvb_index_config_init(kvb_index_config *cfg);
int      kvb_index_create(const kvb_index_config *cfg, kvb_index **out);
int      kvb_index_destroy(kvb_index *idx);
int      kvb_index_config_get(const kvb_index *idx, kvb_index_config *out);
uint64_t kvb_index_salt_key(const char *lora_name, size_t lora_len, const char *cache_salt,
                            size_t salt_len);
uint64_t kvb_index_block_seed(const kvb_index *idx, uint64_t salt_key);
int      kvb_index_hashes(const kvb_index *idx, const uint32_t *tokens, size_t n_tokens,
                          const char *lora_name, const char *cache_salt, uint64_t *out,
                          size_t cap);
int      kvb_index_stream_add(kvb_index *idx, const kvb_index_stream_config *cfg,
                              uint32_t *out);
int      kvb_index_stream_find(const kvb_index *idx, const char *name, int64_t dp_rank,
                               uint32_t *out);
int      kvb_index_stream_remove(kvb_index *idx, uint32_t stream);
int      kvb_index_worker_remove(kvb_index *idx, const char *name);
int      kvb_index_stream_clear(kvb_index *idx, uint32_t stream, kvb_stream_state state);
int      kvb_index_stream_set_state(kvb_index *idx, uint32_t stream, kvb_stream_state state);
int      kvb_index_stream_set_seq(kvb_index *idx, uint32_t stream, int64_t last_seq);
int      kvb_index_stream_count(kvb_index *idx, uint32_t stream, kvb_stream_counter c,
                                uint64_t delta);
int      kvb_index_stream_drop(kvb_index *idx, uint32_t stream, const uint32_t dropped[11]);
int      kvb_index_stream_heard(kvb_index *idx, uint32_t stream, bool connected,
                                int64_t now_ns);
int      kvb_index_tick(kvb_index *idx, int64_t now_ns);
int64_t  kvb_index_now_ns(void);
int      kvb_index_stream_info_get(const kvb_index *idx, uint32_t stream,
                                   kvb_index_stream_info *out);
int      kvb_index_streams(const kvb_index *idx, uint32_t *ids, uint32_t cap);
int      kvb_index_apply(kvb_index *idx, uint32_t stream, const kvb_index_event *events,
                         uint32_t n, int64_t seq);
int      kvb_index_decode(const void *payload, size_t len, kvb_wire_kind kind,
                          kvb_index_batch *out);
void     kvb_index_batch_fini(kvb_index_batch *b);
int      kvb_index_match(kvb_index *idx, const uint64_t *hashes, uint32_t n,
                         kvb_index_result *out, uint32_t k);
int      kvb_index_match_tokens(kvb_index *idx, const uint32_t *tokens, size_t n_tokens,
                                const char *lora_name, const char *cache_salt,
                                kvb_index_result *out, uint32_t k, uint32_t *blocks);
int      kvb_index_save(kvb_index *idx, const char *path, size_t *bytes);
int      kvb_index_save_mem(kvb_index *idx, void **buf, size_t *len);
int      kvb_index_load(const char *path, const kvb_index_config *cfg, kvb_index **out);
int      kvb_index_load_mem(const void *buf, size_t len, const kvb_index_config *cfg,
                            kvb_index **out);
int      kvb_index_stats_get(const kvb_index *idx, kvb_index_stats *out);
int      kvb_index_metrics_text(const kvb_index *idx, char *buf, size_t cap);
const char *kvb_stream_state_name(kvb_stream_state s);
const char *kvb_drop_reason_name(kvb_drop_reason r);
const char *kvb_tier_name(kvb_tier t);

/* ---- kvblock/subscriber.h ---- */
typedef struct kvb_subscriber kvb_subscriber;

typedef struct kvb_subscriber_worker {
    const char *name;
    const char *endpoint;
    const char *replay_endpoint;
    kvb_wire_kind kind;
    uint32_t block_size;
    const char *topic;
} kvb_subscriber_worker;

typedef enum { KVB_SUB_BATCH = 0, KVB_SUB_CLEAR = 1, KVB_SUB_STALE = 2,
               KVB_SUB_LIVE = 3 } kvb_sub_note;

typedef void (*kvb_subscriber_cb)(void *user, kvb_sub_note note, const char *worker,
                                  int64_t seq, const kvb_index_batch *batch,
                                  kvb_stream_state state);

typedef struct kvb_subscriber_config {
    kvb_index *index;
    uint32_t replay_timeout_ms;
    uint32_t heartbeat_ivl_ms;
    uint32_t tick_ms;
    int64_t max_message_bytes;
    uint32_t max_replay_batches;
    int reconnect_ivl_ms;
    int reconnect_ivl_max_ms;
    kvb_subscriber_cb callback;
    void *user;
} kvb_subscriber_config;

typedef struct kvb_subscriber_worker_info {
    char name[64];
    bool connected;
    bool heard;
    int64_t expected_seq;
    uint64_t messages;
    uint64_t bad_messages;
    uint64_t gaps, replays, replay_failures, restarts;
    uint64_t bad_payloads;
} kvb_subscriber_worker_info;

void kvb_subscriber_config_init(kvb_subscriber_config *cfg);
int  kvb_subscriber_create(const kvb_subscriber_config *cfg, kvb_subscriber **out);
int  kvb_subscriber_destroy(kvb_subscriber *sub);
int  kvb_subscriber_add_worker(kvb_subscriber *sub, const kvb_subscriber_worker *w);
int  kvb_subscriber_remove_worker(kvb_subscriber *sub, const char *name, bool drop);
int  kvb_subscriber_worker_info_get(kvb_subscriber *sub, const char *name,
                                    kvb_subscriber_worker_info *out);
bool kvb_subscriber_ready(kvb_subscriber *sub);
int  kvb_subscriber_sync(kvb_subscriber *sub, uint32_t timeout_ms);
bool kvb_subscriber_available(void);

/* ---- kvblock/publisher.h (tests and examples feed a subscriber with it) ---- */
typedef struct kvb_publisher kvb_publisher;
typedef enum { KVB_PUBLISHER_AUTO = 0, KVB_PUBLISHER_BIND,
               KVB_PUBLISHER_CONNECT } kvb_publisher_attach;

typedef enum { KVB_PUBLISHER_LAYOUT_MAP = 0, KVB_PUBLISHER_LAYOUT_ARRAY = 1 } kvb_publisher_layout;

typedef struct kvb_publisher_config {
    const char *endpoint;
    kvb_publisher_attach attach;
    const char *replay_endpoint;
    const char *topic;
    const char *medium;
    int64_t data_parallel_rank;
    int64_t lora_id;
    uint32_t queue_batches;
    uint32_t buffer_batches;
    int hwm;
    int linger_ms;
    bool offset_by_rank;
    kvb_publisher_layout layout;
} kvb_publisher_config;

typedef struct kvb_publisher_stats {
    uint64_t enqueued, dropped, published, events, replay_requests, replayed, bad_requests;
    int64_t last_seq;
} kvb_publisher_stats;

void kvb_publisher_config_init(kvb_publisher_config *cfg);
int  kvb_publisher_create(const kvb_publisher_config *cfg, kvb_publisher **out);
int  kvb_publisher_destroy(kvb_publisher *pub);
void kvb_publisher_sink(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n);
void kvb_publisher_event_config(kvb_publisher *pub, kvb_event_config *cfg);
int  kvb_publisher_flush(kvb_publisher *pub, uint32_t timeout_ms);
int  kvb_publisher_stats_get(kvb_publisher *pub, kvb_publisher_stats *out);
bool kvb_publisher_available(void);

/* libc, for kvb_index_save_mem's buffer (looked up through dlopen(NULL)) */
void free(void *ptr);
"""

LAYOUT = {
    "kvb_index_config": ["block_size", "seed", "tier_weight", "stale_after_s", "drop_after_s",
                         "max_streams", "max_entries_per_stream", "shards", "allocator"],
    "kvb_index_stream_config": ["name", "dp_rank", "hashes", "block_size"],
    "kvb_index_event": ["type", "tier", "n_hashes", "hashes", "has_parent", "parent",
                        "tokens", "n_tokens", "block_size", "salt_key"],
    "kvb_index_batch": ["ts", "dp_rank", "n_events", "events", "dropped", "priv_"],
    "kvb_index_result": ["stream", "dp_rank", "device", "host", "disk", "score", "entries",
                         "state", "worker"],
    "kvb_index_stream_info": ["stream", "worker", "dp_rank", "hashes", "block_size", "state",
                              "last_seq", "batches", "events", "counters", "dropped",
                              "entries", "engine_map", "last_heard_ns"],
    "kvb_index_stats": ["streams", "keys", "entries", "memory_bytes", "batches", "events",
                        "block_ops", "matches", "matched_blocks"],
    "kvb_subscriber_worker": ["name", "endpoint", "replay_endpoint", "kind", "block_size",
                              "topic"],
    "kvb_subscriber_config": ["index", "replay_timeout_ms", "heartbeat_ivl_ms", "tick_ms",
                              "max_message_bytes", "max_replay_batches", "reconnect_ivl_ms",
                              "reconnect_ivl_max_ms", "callback", "user"],
    "kvb_subscriber_worker_info": ["name", "connected", "heard", "expected_seq", "messages",
                                   "bad_messages", "gaps", "replays", "replay_failures",
                                   "restarts", "bad_payloads"],
    "kvb_publisher_config": ["endpoint", "attach", "replay_endpoint", "topic", "medium",
                             "data_parallel_rank", "lora_id", "queue_batches",
                             "buffer_batches", "hwm", "linger_ms", "offset_by_rank", "layout"],
    "kvb_publisher_stats": ["enqueued", "dropped", "published", "events", "replay_requests",
                            "replayed", "bad_requests", "last_seq"],
}

# Array lengths written as numbers in CDEF, with the C constant each one stands for:
# the layout test compares them with what layout.c prints.
CONSTANTS = {"KVB_TIER_COUNT": 3, "KVB_DROP_COUNT": 11, "KVB_COUNT_COUNT": 4,
             "KVB_INDEX_NAME_MAX": 64, "KVB_INDEX_NO_RANK": -1,
             "KVB_INDEX_NO_STREAM": 0xFFFFFFFF, "KVB_HASH_DYNAMO_SEED": 1337}
