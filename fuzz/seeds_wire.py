#!/usr/bin/python3
"""Write the hand-made seed inputs of fuzz_wire into fuzz/corpus/fuzz_wire/.

Each seed is one raw KV-event payload (the msgpack frame of a ZeroMQ message)
as vLLM, SGLang or kvblock's publisher send them, built with Debian's
python3-msgpack: vLLM's current layout (events as tagged maps, batch an array
or a map), the legacy tagged arrays with every trailing field vLLM has added,
SGLang (signed hashes, bigram token pairs, attn_dp_rank, cache_salt in the
event or in its metadata, CPU_PINNED), digests as hashes, LoRA by name and id,
extra_keys (multimodal, prompt embeddings, typed keys), groups and sliding
windows, every medium, TierBlocksCleared, unknown types and keys, and
malformed shapes (wrong types, missing fields, truncation, huge declared
lengths, deep nesting, trailing bytes). libFuzzer mutates from there; inputs
it finds itself are added with `make fuzz-merge` (named by their SHA-1).

usage: /usr/bin/python3 fuzz/seeds_wire.py [outdir]
"""
import os
import struct
import sys

import msgpack


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def stored_map(hashes, parent=None, tokens=None, bs=2, medium="GPU", **extra):
    ev = {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
          "token_ids": tokens if tokens is not None else list(range(bs * len(hashes))),
          "block_size": bs, "lora_id": None, "medium": medium, "lora_name": None}
    ev.update(extra)
    return ev


def stored_arr(hashes, parent=None, tokens=None, bs=2, medium="GPU", *trailing):
    return ["BlockStored", hashes, parent,
            tokens if tokens is not None else list(range(bs * len(hashes))), bs, None, medium,
            *trailing]


def removed_map(hashes, medium="GPU", **extra):
    ev = {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium}
    ev.update(extra)
    return ev


def batch(events, rank=0, ts=1700000000.25):
    return [ts, events, rank]


def seeds():
    out = {}
    d32 = bytes(range(0xa0, 0xc0))
    d16 = bytes(range(16))

    # vLLM, current: tagged maps in an array batch
    out["vllm-map"] = pack(batch([
        stored_map([1, 2, 3], None, list(range(6))),
        stored_map([4], 3, [6, 7], medium="CPU"),
        removed_map([1, 2], None),
        {"type": "AllBlocksCleared"}]))
    # vLLM without array_like on the batch: a map
    out["vllm-map-batch"] = pack({"ts": 1.5, "events": [stored_map([9, 10])],
                                  "data_parallel_rank": 2})
    out["vllm-map-batch-no-rank"] = pack({"events": [removed_map([9])], "ts": 2})
    # vLLM legacy arrays, with the fields each release added
    out["vllm-array-v0"] = pack(batch([["BlockStored", [1, 2], None, [0, 1, 2, 3], 2, None],
                                       ["BlockRemoved", [1]], ["AllBlocksCleared"]], None))
    out["vllm-array-medium"] = pack(batch([stored_arr([1, 2], None, None, 2, "GPU"),
                                          ["BlockRemoved", [2], "CPU"]]))
    out["vllm-array-full"] = pack(batch([
        stored_arr([5, 6], 4, None, 2, "DISK", "adapter", [["adapter"], None], 0,
                   "full_attention", None, "future"),
        ["BlockRemoved", [5], "STORAGE", 0]]))
    # digests instead of ints (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0)
    out["vllm-digests"] = pack(batch([stored_map([d32, d16], d32), removed_map([d32])]))
    # LoRA by name, by id, cache salt
    out["vllm-lora"] = pack(batch([
        stored_map([1], lora_name="sql-lora"),
        dict(stored_map([2]), lora_id=7),
        stored_map([3], cache_salt="tenant")]))
    # extra keys: multimodal, prompt embeddings, typed keys
    out["vllm-extra-keys"] = pack(batch([
        stored_map([1, 2, 3, 4], extra_keys=[None, None, [["img", 0]], None]),
        stored_map([5, 6], lora_name="L", extra_keys=[["L"], [b"e" * 32]]),
        stored_map([7, 8], lora_name="L", extra_keys=[
            [{"type": "lora", "name": "L"}],
            [{"type": "mm", "modality": "image", "hash": "h", "block_offset": 0}]]),
        stored_map([9], extra_keys=[["salt"]])]))
    # groups and sliding windows
    out["vllm-groups"] = pack(batch([
        stored_map([1], group_idx=0, kv_cache_spec_kind="full_attention"),
        stored_map([2], group_idx=1, kv_cache_spec_kind="sliding_window",
                   kv_cache_spec_sliding_window=128),
        stored_map([3], kv_cache_spec_kind="mamba"),
        removed_map([2], group_idx=1)]))
    # every medium
    out["media"] = pack(batch([removed_map([i], m) for i, m in enumerate(
        ["GPU", "gpu", "CPU", "cpu", "CPU_PINNED", "DISK", "STORAGE", "storage", "EXTERNAL",
         "", None])]))
    out["tier-cleared"] = pack(batch([{"type": "TierBlocksCleared", "medium": "CPU"},
                                      {"type": "TierBlocksCleared", "medium": "GPU",
                                       "ownership": "kvcr"}]))
    # SGLang: [ts, events, attn_dp_rank], signed hashes, bigram pairs, metadata
    out["sglang-array"] = pack([3.0, [
        ["BlockStored", [-1, -(2 ** 63)], -42, [[500, 501], [501, 502], [502, 503],
                                                [503, 504]], 2, None, "CPU_PINNED",
         {"cache_salt": "tenant-a"}],
        ["BlockStored", [-2], None, [1, 2], 2, None],
        ["BlockRemoved", [-42]], ["BlockRemoved", [-1], "GPU"]], 1])
    out["sglang-map"] = pack([3.0, [
        {"type": "BlockStored", "block_hashes": [-7], "parent_block_hash": -1,
         "token_ids": [1, 2], "block_size": 2, "lora_id": None, "medium": "GPU",
         "cache_salt": "s", "session_id": "x"},
        {"type": "BlockRemoved", "block_hashes": [-7], "medium": "EXTERNAL"}], 0])
    out["sglang-old"] = pack([4.0, [["BlockStored", [1], None, [1, 2], 2, None]]])
    # kvblock's publisher, both layouts (router hashes, 16-token blocks, no tokens)
    h = [0x9e3779b97f4a7c15, 0x243f6a8885a308d3]
    out["kvblock-map"] = pack(batch([stored_map(h, None, [], 16), removed_map(h[:1]),
                                     {"type": "AllBlocksCleared"}], None))
    out["kvblock-array"] = pack(batch([["BlockStored", h, h[0], [], 16, 3, "CPU"],
                                       ["BlockRemoved", h, "CPU"], ["AllBlocksCleared"]], 5))
    # unknown types and keys
    out["unknown"] = pack(batch([{"type": "BlockMoved"}, ["KVCacheTouched", 1],
                                 stored_map([1], locality="LOCAL", event_version=1),
                                 ["AllBlocksCleared", 1, {}]]))
    out["empty"] = pack(batch([]))
    # malformed events: wrong types in each field
    bad = []
    for field, val in [("block_hashes", "x"), ("block_hashes", [1.5]), ("block_hashes", [b"x"]),
                       ("parent_block_hash", "p"), ("token_ids", [-1]),
                       ("token_ids", [2 ** 32]), ("token_ids", None), ("block_size", 0),
                       ("block_size", -2), ("lora_id", "7"), ("medium", 3),
                       ("lora_name", 1), ("extra_keys", [None]), ("group_idx", -1),
                       ("kv_cache_spec_sliding_window", "w"), ("cache_salt", 1),
                       ("metadata", "m")]:
        bad.append(stored_map([1, 2], **{field: val}))
    bad += [5, "BlockStored", None, [], [1], {}, {"type": []},
            ["BlockStored", [], None, []], ["BlockRemoved"], {"type": "TierBlocksCleared"}]
    out["malformed-events"] = pack(batch(bad))
    # malformed batches
    out["bad-root-int"] = pack(7)
    out["bad-short"] = pack([1.0])
    out["bad-events-map"] = pack([1.0, {}, None])
    out["bad-ts"] = pack(["now", [], None])
    out["bad-rank"] = pack([1.0, [], -1])
    out["bad-two-ranks"] = pack({"ts": 1.0, "events": [], "data_parallel_rank": 1,
                                 "attn_dp_rank": 2})
    out["bad-trailing"] = pack(batch([])) + b"\x00"
    full = pack(batch([stored_map([1, 2, 3])]))
    out["bad-truncated"] = full[:len(full) // 2]
    out["bad-huge-array"] = b"\xdd\xff\xff\xff\xff"
    out["bad-huge-events"] = b"\x93\xcb" + struct.pack(">d", 1.0) + b"\xdd\x10\x00\x00\x00"
    out["bad-huge-str"] = b"\x93\xcb" + struct.pack(">d", 1.0) + b"\x91\xdb\xff\xff\xff\xff"
    out["bad-deep"] = b"\x91" * 40 + b"\xc0"
    out["bad-nan"] = b"\x93\xcb" + struct.pack(">d", float("nan")) + b"\x90\xc0"
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_wire")
    os.makedirs(outdir, exist_ok=True)
    s = seeds()
    for name, payload in s.items():
        with open(os.path.join(outdir, "seed-" + name), "wb") as f:
            f.write(payload)
    print(f"{len(s)} seeds written to {outdir}")


if __name__ == "__main__":
    main()
