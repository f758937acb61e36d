"""The truth the kvb-indexer end-to-end tests compare the daemon with.

Router hashes are computed here independently of libkvblock (python3-xxhash),
from the rules of FLEET.md section 2 and kvblock/index.h:

    salt hash   = XXH3-64(bytes, seed 0); an absent or empty string -> 0
    chain(p, b) = XXH3-64(le64(p) || le64(b), seed 1337)
    salt key    = 0 when the LoRA name and the cache salt are both absent/empty,
                  else chain(salt(lora), salt(cache_salt)) | 1
    block seed  = the index's seed (default 1337) for salt key 0,
                  else chain(seed, salt_key)
    block hash  = XXH3-64(tokens as little-endian u32, seed = block seed)
    seq(0)      = block hash(0);  seq(i) = chain(seq(i-1), block hash(i))

Model (one per daemon) - what the index must hold after the events the tests
published, with kvb_index's rules (index.h, FLEET.md sections 2-5):
  - per stream (worker, dp_rank): tier -> Counter(router hash) (copies);
  - ENGINE streams (vllm, sglang) keep engine hash -> [router hash, copies over
    all tiers]; a STORED whose parent is unknown is dropped whole; a block whose
    engine hash is already mapped keeps its router hash; REMOVED goes through
    the map; CLEARED / clear() empties the stream;
  - match: device = longest prefix held on device, host = longest on device or
    host minus device, disk = longest on any tier minus both; score =
    device + 0.8 host + 0.5 disk; sorted by score desc, entries asc, name, rank;
    streams that are not matchable (stale) or hold no prefix are left out.
"""
import collections

import xxhash

M64 = (1 << 64) - 1
CHAIN_SEED = 1337
DEVICE, HOST, DISK = 0, 1, 2
MEDIUM_TIER = {None: DEVICE, "GPU": DEVICE, "CPU": HOST, "DISK": DISK, "STORAGE": DISK}
WEIGHTS = (1.0, 0.8, 0.5)


def xxh3(data, seed):
    return xxhash.xxh3_64_intdigest(bytes(data), seed=seed)


def salt_hash(s):
    if not s:
        return 0
    return xxh3(s.encode() if isinstance(s, str) else s, 0)


def chain(parent, block):
    return xxh3((parent & M64).to_bytes(8, "little") + (block & M64).to_bytes(8, "little"),
                CHAIN_SEED)


def salt_key(lora_name=None, cache_salt=None):
    if not lora_name and not cache_salt:
        return 0
    return chain(salt_hash(lora_name), salt_hash(cache_salt)) | 1


def block_seed(seed, skey):
    return chain(seed, skey) if skey else seed


def block_hash(tokens, seed):
    return xxh3(b"".join((t & 0xFFFFFFFF).to_bytes(4, "little") for t in tokens), seed)


def router_hashes(tokens, block_size=16, seed=1337, lora_name=None, cache_salt=None):
    """kvb_index_hashes: router hashes of the full blocks of a request."""
    bseed = block_seed(seed, salt_key(lora_name, cache_salt))
    out, prev = [], None
    for i in range(len(tokens) // block_size):
        b = block_hash(tokens[i * block_size:(i + 1) * block_size], bseed)
        prev = b if prev is None else chain(prev, b)
        out.append(prev)
    return out


def engine_key(h):
    """The engine hash as the index keys it: u64 ints as they are, signed ints as
    two's complement, 32-byte digests by their last 8 bytes (big-endian)."""
    if isinstance(h, (bytes, bytearray)):
        return int.from_bytes(bytes(h[-8:]), "big")
    return h & M64


class Stream:
    def __init__(self, worker, rank, engine):
        self.worker, self.rank, self.engine = worker, rank, engine
        self.tiers = [collections.Counter() for _ in range(3)]
        self.emap = {}  # engine key -> [router hash, copies]
        self.matchable = True

    def clear(self):
        self.tiers = [collections.Counter() for _ in range(3)]
        self.emap = {}

    def entries(self):
        return sum(len(t) for t in self.tiers)


class Model:
    def __init__(self, block_size=16, seed=1337):
        self.block_size, self.seed = block_size, seed
        self.streams = {}  # (worker, rank) -> Stream
        self.kinds = {}  # worker -> "vllm" | "sglang" | "kvblock"

    def add_worker(self, name, kind):
        self.kinds[name] = kind

    def stream(self, worker, rank):
        key = (worker, rank)
        if key not in self.streams:
            self.streams[key] = Stream(worker, rank, self.kinds[worker] != "kvblock")
        return self.streams[key]

    def clear_worker(self, worker):
        for (w, _), st in self.streams.items():
            if w == worker:
                st.clear()

    def set_matchable(self, worker, flag):
        for (w, _), st in self.streams.items():
            if w == worker:
                st.matchable = flag

    # -- events, in vLLM's spelling (dicts as vllm_pub.py builds them) --

    def apply_batch(self, worker, rank, events):
        st = self.stream(worker, rank)
        for ev in events:
            t = ev.get("type")
            if t == "BlockStored":
                self._stored(st, ev)
            elif t == "BlockRemoved":
                self._removed(st, ev)
            elif t == "AllBlocksCleared":
                st.clear()
            # anything else: skipped by the index (unknown_type)

    def _tier(self, ev):
        return MEDIUM_TIER.get(ev.get("medium"))

    def _stored(self, st, ev):
        tier = self._tier(ev)
        if tier is None or (ev.get("group_idx") or 0) != 0:
            return
        hashes = ev["block_hashes"]
        if not hashes:
            return
        bs = ev.get("block_size") or self.block_size
        if not st.engine:
            for h in hashes:
                st.tiers[tier][h & M64] += 1
            return
        if bs != self.block_size:
            return
        tokens = ev.get("token_ids") or []
        if len(tokens) != len(hashes) * bs:
            return
        lora = ev.get("lora_name")
        if lora is None and ev.get("lora_id") is not None:
            lora = str(ev["lora_id"])
        bseed = block_seed(self.seed, salt_key(lora, ev.get("cache_salt")))
        parent = ev.get("parent_block_hash")
        prev = None
        if parent is not None:
            ent = st.emap.get(engine_key(parent))
            if ent is None:
                return  # unknown parent: the whole event is dropped
            prev = ent[0]
        for i, h in enumerate(hashes):
            k = engine_key(h)
            if k in st.emap:
                r = st.emap[k][0]
            else:
                b = block_hash(tokens[i * bs:(i + 1) * bs], bseed)
                r = b if prev is None else chain(prev, b)
                st.emap[k] = [r, 0]
            st.emap[k][1] += 1
            st.tiers[tier][r] += 1
            prev = r

    def _removed(self, st, ev):
        tier = self._tier(ev)
        if tier is None or (ev.get("group_idx") or 0) != 0:
            return
        for h in ev["block_hashes"]:
            if st.engine:
                k = engine_key(h)
                ent = st.emap.get(k)
                if ent is None or st.tiers[tier][ent[0]] == 0:
                    continue
                r = ent[0]
                ent[1] -= 1
                if ent[1] == 0:
                    del st.emap[k]
            else:
                r = h & M64
                if st.tiers[tier][r] == 0:
                    continue
            st.tiers[tier][r] -= 1
            if st.tiers[tier][r] == 0:
                del st.tiers[tier][r]

    # -- queries --

    def match(self, hashes):
        """Expected /v1/match "workers" list (dicts) for router hashes."""
        out = []
        for (w, rank), st in self.streams.items():
            if not st.matchable:
                continue
            dev = anyhost = anyt = 0
            run_dev = run_host = run_any = True
            for h in hashes:
                on = [st.tiers[t][h] > 0 for t in range(3)]
                run_dev = run_dev and on[DEVICE]
                run_host = run_host and (on[DEVICE] or on[HOST])
                run_any = run_any and any(on)
                if not run_any:
                    break
                dev += run_dev
                anyhost += run_host
                anyt += run_any
            if anyt == 0:
                continue
            d, h, k = dev, anyhost - dev, anyt - anyhost
            out.append({"worker": w, "dp_rank": None if rank < 0 else rank, "device": d,
                        "host": h, "disk": k,
                        "score": d * WEIGHTS[0] + h * WEIGHTS[1] + k * WEIGHTS[2],
                        "_entries": st.entries(), "_rank": rank})
        out.sort(key=lambda x: (-x["score"], x["_entries"], x["worker"].encode(), x["_rank"]))
        for x in out:
            del x["_entries"], x["_rank"]
        return out


def same_answer(got, want):
    """Compare a daemon's "workers" list with the model's (scores to 1e-9)."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        for k in ("worker", "dp_rank", "device", "host", "disk"):
            if g.get(k) != w[k]:
                return False
        if abs(float(g.get("score", -1)) - w["score"]) > 1e-9:
            return False
    return True
