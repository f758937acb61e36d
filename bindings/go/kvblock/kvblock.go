// Package kvblock is the Go binding of kvblock, the paged KV-cache block manager
// (C library libkvblock, found through pkg-config: `#cgo pkg-config: kvblock`).
//
// A Pool is safe for concurrent use by several goroutines. Handles (Mutables,
// Completes, Blocks, Block) must be released explicitly with Release (exactly once;
// a second Release returns ESTALE and changes nothing). A handle that becomes
// unreachable without Release is a leak: its finalizer logs it and counts it
// (Leaks), and never releases it, so the bug stays visible (Pool.Close then
// returns EBUSY).
//
//	pool, _ := kvblock.NewPool(kvblock.Config{BlockCount: 1024})
//	defer pool.Close()
//	h, _ := kvblock.HashTokens(tokens, 16, 0)
//	hit, _ := pool.Match(h)          // cached prefix, one lock
//	defer hit.Release()
//	blocks, _ := pool.Put(h[hit.Len():]) // allocate + stage + register
//	defer blocks.Release()
package kvblock

/*
#cgo pkg-config: kvblock
#include <stdlib.h>
#include <kvblock.h>
*/
import "C"

import (
	"log"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Errno is a kvblock error: the errno value of the C call (positive). Compare with the
// constants (errors.Is(err, kvblock.ENOSPC)); Name gives "ENOSPC".
type Errno int

// The errno values kvblock returns (Linux).
const (
	ENOENT    Errno = 2
	ENOMEM    Errno = 12
	EBUSY     Errno = 16
	EEXIST    Errno = 17
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	ERANGE    Errno = 34
	EBADMSG   Errno = 74
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESTALE    Errno = 116
)

// Error is kvb_strerror: "ENOSPC: not enough free or evictable blocks".
func (e Errno) Error() string { return C.GoString(C.kvb_strerror(C.int(-e))) }

// Name is kvb_err_name: "ENOSPC".
func (e Errno) Name() string { return C.GoString(C.kvb_err_name(C.int(-e))) }

func check(rc C.int) (int, error) {
	if rc < 0 {
		return 0, Errno(-rc)
	}
	return int(rc), nil
}

var leaks atomic.Uint64

// Leaks is the number of handles (or batches) found unreachable without Release, and
// of pools never closed. Each was logged; none was released.
func Leaks() uint64 { return leaks.Load() }

func reportLeak(what string, n int) {
	leaks.Add(1)
	log.Printf("kvblock: leak: %s (%d handles) became unreachable without Release; not released", what, n)
}

// Hash is a 128-bit positional lineage content hash (kvb_hash).
type Hash struct{ Hi, Lo uint64 }

// Current is the 64-bit sequence hash (the router's key).
func (h Hash) Current() uint64 { return uint64(C.kvb_hash_current(h.c())) }

// Position is the block's position in its sequence.
func (h Hash) Position() uint32 { return uint32(C.kvb_hash_position(h.c())) }

func (h Hash) c() C.kvb_hash { return C.kvb_hash{hi: C.uint64_t(h.Hi), lo: C.uint64_t(h.Lo)} }

func hashPtr(h []Hash) *C.kvb_hash {
	if len(h) == 0 {
		return nil
	}
	return (*C.kvb_hash)(unsafe.Pointer(&h[0]))
}

// HashTokens: content hashes of the full blocks of tokens (kvb_hash_tokens); saltHash
// is 0 or HashSalt of the request's salt.
func HashTokens(tokens []uint32, blockSize uint32, saltHash uint64) ([]Hash, error) {
	if blockSize == 0 {
		return nil, EINVAL
	}
	out := make([]Hash, len(tokens)/int(blockSize)+1)
	var tp *C.uint32_t
	if len(tokens) > 0 {
		tp = (*C.uint32_t)(unsafe.Pointer(&tokens[0]))
	}
	n, err := check(C.kvb_hash_tokens(tp, C.size_t(len(tokens)), C.uint32_t(blockSize),
		C.uint64_t(saltHash), hashPtr(out), C.size_t(len(out))))
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// HashSalt is kvb_hash_salt of a request's salt bytes.
func HashSalt(salt []byte) uint64 {
	if len(salt) == 0 {
		return uint64(C.kvb_hash_salt(nil, 0))
	}
	return uint64(C.kvb_hash_salt(unsafe.Pointer(&salt[0]), C.size_t(len(salt))))
}

// Config of a pool; zero fields take the C defaults.
type Config struct {
	BlockCount     uint32 // required
	BlockSize      uint32 // default 16
	Evict          string // "lru" (default), "fifo", "multi_lru", "tinylfu", "lineage", "lineage_arc"
	DupReject      bool   // KVB_DUP_REJECT instead of ALLOW
	ResetOnRelease bool
	Name           string // metrics label, default "pool"
}

var policies = map[string]C.kvb_evict_policy{
	"": C.KVB_EVICT_LRU, "lru": C.KVB_EVICT_LRU, "fifo": C.KVB_EVICT_FIFO,
	"multi_lru": C.KVB_EVICT_MULTI_LRU, "tinylfu": C.KVB_EVICT_TINYLFU,
	"lineage": C.KVB_EVICT_LINEAGE, "lineage_arc": C.KVB_EVICT_LINEAGE_ARC,
}

// Pool is one pool of blocks (kvb_pool); safe for concurrent use.
type Pool struct {
	p      *C.kvb_pool
	closed atomic.Bool
}

// NewPool creates a pool.
func NewPool(cfg Config) (*Pool, error) {
	var c C.kvb_pool_config
	C.kvb_pool_config_init(&c)
	c.block_count = C.uint32_t(cfg.BlockCount)
	if cfg.BlockSize != 0 {
		c.block_size = C.uint32_t(cfg.BlockSize)
	}
	pol, ok := policies[cfg.Evict]
	if !ok {
		return nil, EINVAL
	}
	c.evict = pol
	if cfg.DupReject {
		c.dup_policy = C.KVB_DUP_REJECT
	}
	c.reset_on_release = C.bool(cfg.ResetOnRelease)
	if cfg.Name != "" {
		name := C.CString(cfg.Name) // copied by kvb_pool_create
		defer C.free(unsafe.Pointer(name))
		c.name = name
	}
	var p *C.kvb_pool
	if _, err := check(C.kvb_pool_create(&c, &p)); err != nil {
		return nil, err
	}
	pool := &Pool{p: p}
	runtime.SetFinalizer(pool, func(pl *Pool) {
		if !pl.closed.Load() {
			reportLeak("Pool (never closed)", 0)
		}
	})
	return pool, nil
}

// Close destroys the pool: EBUSY (and nothing freed) while handles are outstanding.
func (p *Pool) Close() error {
	if p.closed.Load() {
		return nil
	}
	if _, err := check(C.kvb_pool_destroy(p.p)); err != nil {
		return err
	}
	p.closed.Store(true)
	return nil
}

// Available is the number of free plus evictable blocks.
func (p *Pool) Available() uint32 { return uint32(C.kvb_pool_available(p.p)) }

// BlockCount is the pool's size in blocks.
func (p *Pool) BlockCount() uint32 { return uint32(C.kvb_pool_block_count(p.p)) }

// Check verifies every invariant (kvb_pool_check); for tests.
func (p *Pool) Check() error { _, err := check(C.kvb_pool_check(p.p)); return err }

// Stats is a coherent snapshot of the pool's gauges and counters (kvb_stats).
type Stats struct {
	BlockCount, Reset, Mutable, Staged, Primary, Duplicate, Inactive uint32
	MatchRequested, MatchReturned, Misuse, Evictions, Registrations  uint64
}

// Stats takes a snapshot under the pool lock.
func (p *Pool) Stats() Stats {
	var s C.kvb_stats
	C.kvb_pool_stats(p.p, &s)
	return Stats{uint32(s.block_count), uint32(s.reset), uint32(s.mutable_), uint32(s.staged),
		uint32(s.primary), uint32(s.duplicate), uint32(s.inactive), uint64(s.match_requested),
		uint64(s.match_returned), uint64(s.misuse), uint64(s.evictions), uint64(s.registrations)}
}

// Mutables is a batch of blocks being filled (Allocate): Stage them, or Release.
type Mutables struct {
	pool *Pool
	raw  []C.kvb_mutable
	done bool
}

// Completes is a batch of staged blocks: Register them, or Release.
type Completes struct {
	pool *Pool
	raw  []C.kvb_complete
	done bool
}

// Blocks is a batch of block references: Release them (one kvb_block_release_n).
type Blocks struct {
	pool *Pool
	raw  []C.kvb_block
	done bool
}

// Block is a single block reference (Blocks.Clone, Weak.Upgrade): Release it.
type Block struct {
	pool *Pool
	raw  C.kvb_block
	done bool
}

// Weak is a weak reference: keeps nothing alive, needs no release.
type Weak struct {
	pool *Pool
	raw  C.kvb_weak
}

func watch[T any](h *T, what string, n func(*T) int, done func(*T) bool) {
	runtime.SetFinalizer(h, func(x *T) {
		if !done(x) {
			reportLeak(what, n(x))
		}
	})
}

func newMutables(p *Pool, raw []C.kvb_mutable) *Mutables {
	m := &Mutables{pool: p, raw: raw}
	watch(m, "Mutables", func(x *Mutables) int { return len(x.raw) }, func(x *Mutables) bool { return x.done })
	return m
}

func newCompletes(p *Pool, raw []C.kvb_complete) *Completes {
	c := &Completes{pool: p, raw: raw}
	watch(c, "Completes", func(x *Completes) int { return len(x.raw) }, func(x *Completes) bool { return x.done })
	return c
}

func newBlocks(p *Pool, raw []C.kvb_block) *Blocks {
	b := &Blocks{pool: p, raw: raw}
	watch(b, "Blocks", func(x *Blocks) int { return len(x.raw) }, func(x *Blocks) bool { return x.done })
	return b
}

func newBlock(p *Pool, raw C.kvb_block) *Block {
	b := &Block{pool: p, raw: raw}
	watch(b, "Block", func(*Block) int { return 1 }, func(x *Block) bool { return x.done })
	return b
}

// Allocate takes n mutable blocks, all or nothing (ENOSPC: nothing taken).
func (p *Pool) Allocate(n int) (*Mutables, error) {
	raw := make([]C.kvb_mutable, n)
	var out *C.kvb_mutable
	if n > 0 {
		out = &raw[0]
	}
	if _, err := check(C.kvb_pool_allocate(p.p, C.uint32_t(n), out, nil, nil)); err != nil {
		return nil, err
	}
	return newMutables(p, raw), nil
}

// Match takes references to the longest cached-or-active prefix of hashes (one lock).
func (p *Pool) Match(hashes []Hash) (*Blocks, error) {
	raw := make([]C.kvb_block, len(hashes))
	var out *C.kvb_block
	if len(hashes) > 0 {
		out = &raw[0]
	}
	k, err := check(C.kvb_pool_match(p.p, hashPtr(hashes), C.uint32_t(len(hashes)), out))
	if err != nil {
		return nil, err
	}
	return newBlocks(p, raw[:k]), nil
}

// MatchInto is Match reusing a released batch's storage (out == nil: a new one): a
// scheduler loop keeps one Blocks, Releases it after each step and matches into it again.
// An out that still holds references is ESTALE (release it first).
func (p *Pool) MatchInto(hashes []Hash, out *Blocks) (*Blocks, error) {
	if out == nil {
		return p.Match(hashes)
	}
	if !out.done || out.pool != p {
		return nil, ESTALE
	}
	if cap(out.raw) < len(hashes) {
		out.raw = make([]C.kvb_block, len(hashes))
	}
	raw := out.raw[:cap(out.raw)]
	var dst *C.kvb_block
	if len(raw) > 0 {
		dst = &raw[0]
	}
	k, err := check(C.kvb_pool_match(p.p, hashPtr(hashes), C.uint32_t(len(hashes)), dst))
	if err != nil {
		return nil, err
	}
	out.raw = raw[:k]
	out.done = false
	return out, nil
}

// Put allocates, stages and registers one block per hash, all or nothing.
func (p *Pool) Put(hashes []Hash) (*Blocks, error) {
	m, err := p.Allocate(len(hashes))
	if err != nil {
		return nil, err
	}
	c, err := m.Stage(hashes)
	if err != nil {
		m.Release()
		return nil, err
	}
	b, err := c.Register()
	if err != nil {
		c.Release()
		return nil, err
	}
	return b, nil
}

// Len is the number of blocks in the batch.
func (m *Mutables) Len() int { return len(m.raw) }

// IDs are the physical block ids (where the runtime writes KV data).
func (m *Mutables) IDs() []uint32 {
	ids := make([]uint32, len(m.raw))
	for i := range m.raw {
		ids[i] = uint32(m.raw[i].id)
	}
	return ids
}

// Stage gives every block its hash under one lock (MUTABLE -> STAGED), consuming m on
// success; on error m is unchanged (still to be released).
func (m *Mutables) Stage(hashes []Hash) (*Completes, error) {
	if m.done {
		return nil, ESTALE
	}
	if len(hashes) != len(m.raw) {
		return nil, EINVAL
	}
	out := make([]C.kvb_complete, len(m.raw))
	if len(m.raw) > 0 {
		if _, err := check(C.kvb_pool_stage(m.pool.p, &m.raw[0], hashPtr(hashes),
			C.uint32_t(len(hashes)), &out[0])); err != nil {
			return nil, err
		}
	}
	m.done = true
	return newCompletes(m.pool, out), nil
}

// Release returns the blocks to the free list.
func (m *Mutables) Release() error {
	if m.done {
		return ESTALE
	}
	m.done = true
	var first error
	for i := range m.raw {
		if _, err := check(C.kvb_mutable_release(&m.raw[i])); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Len is the number of blocks in the batch.
func (c *Completes) Len() int { return len(c.raw) }

// Register makes the staged blocks findable (one lock), consuming c on success.
func (c *Completes) Register() (*Blocks, error) {
	if c.done {
		return nil, ESTALE
	}
	out := make([]C.kvb_block, len(c.raw))
	if len(c.raw) > 0 {
		if _, err := check(C.kvb_pool_register(c.pool.p, &c.raw[0], C.uint32_t(len(c.raw)),
			&out[0])); err != nil {
			return nil, err
		}
	}
	c.done = true
	return newBlocks(c.pool, out), nil
}

// Release drops the staged blocks (never cached).
func (c *Completes) Release() error {
	if c.done {
		return ESTALE
	}
	c.done = true
	var first error
	for i := range c.raw {
		if _, err := check(C.kvb_complete_release(&c.raw[i])); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Len is the number of references.
func (b *Blocks) Len() int { return len(b.raw) }

// IDs are the physical block ids.
func (b *Blocks) IDs() []uint32 {
	ids := make([]uint32, len(b.raw))
	for i := range b.raw {
		ids[i] = uint32(b.raw[i].id)
	}
	return ids
}

// Hash is the content hash of the i-th block.
func (b *Blocks) Hash(i int) Hash { return Hash{uint64(b.raw[i].hash.hi), uint64(b.raw[i].hash.lo)} }

// Clone takes one more reference to the i-th block (lock-free).
func (b *Blocks) Clone(i int) (*Block, error) {
	if b.done {
		return nil, ESTALE
	}
	var out C.kvb_block
	if _, err := check(C.kvb_block_clone(&b.raw[i], &out)); err != nil {
		return nil, err
	}
	return newBlock(b.pool, out), nil
}

// Release releases every reference with one kvb_block_release_n (the pool lock at most
// once). A second Release is ESTALE and changes nothing.
func (b *Blocks) Release() error {
	if b.done {
		return ESTALE
	}
	b.done = true
	if len(b.raw) == 0 {
		return nil
	}
	_, err := check(C.kvb_block_release_n(&b.raw[0], C.uint32_t(len(b.raw))))
	return err
}

// ID is the physical block id.
func (b *Block) ID() uint32 { return uint32(b.raw.id) }

// UseCount is the number of references held on the block.
func (b *Block) UseCount() uint32 { return uint32(C.kvb_block_use_count(&b.raw)) }

// Downgrade makes a weak reference to the block.
func (b *Block) Downgrade() Weak {
	var w C.kvb_weak
	C.kvb_block_downgrade(&b.raw, &w)
	return Weak{pool: b.pool, raw: w}
}

// Release releases the reference. A second Release is ESTALE and changes nothing.
func (b *Block) Release() error {
	if b.done {
		return ESTALE
	}
	b.done = true
	_, err := check(C.kvb_block_release(&b.raw))
	return err
}

// Upgrade gets a live reference: the same block while referenced, else the block holding
// the hash (active or cached), else ENOENT.
func (w Weak) Upgrade() (*Block, error) {
	var out C.kvb_block
	if _, err := check(C.kvb_weak_upgrade(&w.raw, &out)); err != nil {
		return nil, err
	}
	return newBlock(w.pool, out), nil
}
