package kvblock

/*
#include <stdlib.h>
#include <string.h>
#include <kvblock/index.h>
*/
import "C"

import "unsafe"

// Tier of an indexed block.
type Tier int

// Tiers.
const (
	TierDevice Tier = C.KVB_TIER_DEVICE
	TierHost   Tier = C.KVB_TIER_HOST
	TierDisk   Tier = C.KVB_TIER_DISK
)

// HashesKind says what a stream's block hashes are.
type HashesKind int

// Router: router hashes already (kvblock publishers). Engine: the engine's own hashes
// (vLLM, SGLang), recomputed from the events' token ids.
const (
	Router HashesKind = C.KVB_INDEX_HASHES_ROUTER
	Engine HashesKind = C.KVB_INDEX_HASHES_ENGINE
)

// NoRank is the dp_rank of a stream whose engine sends none.
const NoRank int64 = -1

// EventType of an index event.
type EventType int

// Event types.
const (
	Stored  EventType = C.KVB_INDEX_EV_STORED
	Removed EventType = C.KVB_INDEX_EV_REMOVED
	Cleared EventType = C.KVB_INDEX_EV_CLEARED
)

// Event is one normalized KV event for Index.Apply.
type Event struct {
	Type      EventType
	Tier      Tier
	Hashes    []uint64 // router hashes (Router streams) or engine hashes
	HasParent bool     // Stored: the first block has a parent
	Parent    uint64
	Tokens    []uint32 // Stored on Engine streams: len(Hashes) * block size token ids
}

// Match is one worker's answer to a match.
type Match struct {
	Stream             uint32
	Worker             string
	DPRank             int64 // NoRank when none
	Device, Host, Disk uint32
	Score              float64
	Entries            uint64
	State              string // "live", "resyncing", "lagging", "stale"
}

// Index is the fleet index (kvb_index); safe for concurrent use.
type Index struct{ p *C.kvb_index }

// NewIndex creates an empty index with router block size blockSize and Dynamo's seed.
func NewIndex(blockSize uint32) (*Index, error) {
	var cfg C.kvb_index_config
	C.kvb_index_config_init(&cfg)
	cfg.block_size = C.uint32_t(blockSize)
	var p *C.kvb_index
	if _, err := check(C.kvb_index_create(&cfg, &p)); err != nil {
		return nil, err
	}
	return &Index{p: p}, nil
}

// Close frees the index; no call may run during or after it.
func (x *Index) Close() error {
	if x.p == nil {
		return nil
	}
	_, err := check(C.kvb_index_destroy(x.p))
	x.p = nil
	return err
}

// AddStream adds a stream (worker, dpRank) and returns its id (EEXIST when present).
func (x *Index) AddStream(worker string, dpRank int64, kind HashesKind) (uint32, error) {
	name := C.CString(worker)
	defer C.free(unsafe.Pointer(name))
	cfg := C.kvb_index_stream_config{name: name, dp_rank: C.int64_t(dpRank),
		hashes: C.kvb_index_hashes_kind(kind)}
	var id C.uint32_t
	if _, err := check(C.kvb_index_stream_add(x.p, &cfg, &id)); err != nil {
		return 0, err
	}
	return uint32(id), nil
}

// RemoveStream removes a stream and its entries.
func (x *Index) RemoveStream(stream uint32) error {
	_, err := check(C.kvb_index_stream_remove(x.p, C.uint32_t(stream)))
	return err
}

// cCopy copies a Go slice into C memory (cgo: C memory must hold no Go pointers).
func cCopy[T any](s []T, frees *[]unsafe.Pointer) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	n := C.size_t(len(s)) * C.size_t(unsafe.Sizeof(s[0]))
	p := C.malloc(n)
	C.memcpy(p, unsafe.Pointer(&s[0]), n)
	*frees = append(*frees, p)
	return p
}

// Apply applies a batch of events to one stream, in order, and records seq as its last
// applied sequence number (seq < 0: keep it).
func (x *Index) Apply(stream uint32, events []Event, seq int64) error {
	if len(events) == 0 {
		_, err := check(C.kvb_index_apply(x.p, C.uint32_t(stream), nil, 0, C.int64_t(seq)))
		return err
	}
	var frees []unsafe.Pointer
	defer func() {
		for _, p := range frees {
			C.free(p)
		}
	}()
	evs := (*[1 << 28]C.kvb_index_event)(C.calloc(C.size_t(len(events)),
		C.size_t(unsafe.Sizeof(C.kvb_index_event{}))))[:len(events):len(events)]
	frees = append(frees, unsafe.Pointer(&evs[0]))
	for i, e := range events {
		evs[i]._type = C.kvb_index_ev_type(e.Type)
		evs[i].tier = C.kvb_tier(e.Tier)
		evs[i].n_hashes = C.uint32_t(len(e.Hashes))
		evs[i].hashes = (*C.uint64_t)(cCopy(e.Hashes, &frees))
		evs[i].has_parent = C.bool(e.HasParent)
		evs[i].parent = C.uint64_t(e.Parent)
		evs[i].tokens = (*C.uint32_t)(cCopy(e.Tokens, &frees))
		evs[i].n_tokens = C.uint32_t(len(e.Tokens))
	}
	_, err := check(C.kvb_index_apply(x.p, C.uint32_t(stream), &evs[0], C.uint32_t(len(evs)),
		C.int64_t(seq)))
	return err
}

// Hashes are the router hashes of a request's full blocks (lora, salt: "" for none).
func (x *Index) Hashes(tokens []uint32, lora, salt string) ([]uint64, error) {
	l, s := cOpt(lora), cOpt(salt)
	defer C.free(unsafe.Pointer(l))
	defer C.free(unsafe.Pointer(s))
	out := make([]uint64, len(tokens)+1)
	n, err := check(C.kvb_index_hashes(x.p, u32ptr(tokens), C.size_t(len(tokens)), l, s,
		(*C.uint64_t)(unsafe.Pointer(&out[0])), C.size_t(len(out))))
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

func cOpt(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func u32ptr(t []uint32) *C.uint32_t {
	if len(t) == 0 {
		return nil
	}
	return (*C.uint32_t)(unsafe.Pointer(&t[0]))
}

// MatchHashes is the prefix match of a request's router hashes: up to k workers, best
// first.
func (x *Index) MatchHashes(hashes []uint64, k int) ([]Match, error) {
	out := make([]C.kvb_index_result, k+1)
	var hp *C.uint64_t
	if len(hashes) > 0 {
		hp = (*C.uint64_t)(unsafe.Pointer(&hashes[0]))
	}
	n, err := check(C.kvb_index_match(x.p, hp, C.uint32_t(len(hashes)), &out[0], C.uint32_t(k)))
	if err != nil {
		return nil, err
	}
	return convert(out, n, k), nil
}

// MatchTokens hashes the request's tokens and matches them in one C call (lora, salt:
// "" for none); also returns the number of full blocks of the request.
func (x *Index) MatchTokens(tokens []uint32, lora, salt string, k int) ([]Match, uint32, error) {
	l, s := cOpt(lora), cOpt(salt)
	defer C.free(unsafe.Pointer(l))
	defer C.free(unsafe.Pointer(s))
	out := make([]C.kvb_index_result, k+1)
	var blocks C.uint32_t
	n, err := check(C.kvb_index_match_tokens(x.p, u32ptr(tokens), C.size_t(len(tokens)), l, s,
		&out[0], C.uint32_t(k), &blocks))
	if err != nil {
		return nil, 0, err
	}
	return convert(out, n, k), uint32(blocks), nil
}

func convert(out []C.kvb_index_result, n, k int) []Match {
	if n > k {
		n = k
	}
	m := make([]Match, n)
	for i := 0; i < n; i++ {
		r := &out[i]
		m[i] = Match{Stream: uint32(r.stream), Worker: C.GoString(&r.worker[0]),
			DPRank: int64(r.dp_rank), Device: uint32(r.device), Host: uint32(r.host),
			Disk: uint32(r.disk), Score: float64(r.score), Entries: uint64(r.entries),
			State: C.GoString(C.kvb_stream_state_name(r.state))}
	}
	return m
}
