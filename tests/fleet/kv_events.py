"""vLLM's KV events and its ZmqEventPublisher protocol, for the test publishers
(tests/fleet/vllm_pub.py, tests/redis/publisher.py): one spelling of the events,
the batch encoding in both layouts, and the replay ROUTER's answers.

Written from vLLM's field lists (vllm/distributed/kv_events.py):

  EventBatch       ts: float, events: list, data_parallel_rank: int | None
                   current vLLM: a msgpack map {"ts", "events", "data_parallel_rank"};
                   older (array_like=True): [ts, events, data_parallel_rank]
  BlockStored      block_hashes, parent_block_hash, token_ids, block_size, lora_id,
                   medium, lora_name, extra_keys=None, group_idx=None,
                   kv_cache_spec_kind=None, kv_cache_spec_sliding_window=None
  BlockRemoved     block_hashes, medium, group_idx=None
  AllBlocksCleared (no fields)
  events are msgspec structs with tag=True and omit_defaults=True: current vLLM
  writes maps with a "type" key (fields with a default are left out while they
  hold it); the legacy layout is an array, the tag first, then the fields in
  declaration order.

ZmqEventPublisher: a PUB socket sends [topic, seq as 8 bytes big-endian, payload]
per batch, seq counting from 0; the last buffer_steps (seq, payload) are kept for
replay. The replay ROUTER socket takes [identity, "", start as 8 bytes big-endian]
and answers [identity, "", seq, payload] for every buffered batch with
seq >= start, then [identity, "", -1 as 8 bytes, ""].

Needs msgpack only (no zmq import: the sockets are the caller's).
"""
import time

import msgpack

END_SEQ = (-1).to_bytes(8, "big", signed=True)


# ---- events in vLLM's spelling ---------------------------------------------------

def block_stored(block_hashes, parent_block_hash, token_ids, block_size=16, lora_id=None,
                 medium="GPU", lora_name=None, extra_keys=None, group_idx=None,
                 kv_cache_spec_kind=None, kv_cache_spec_sliding_window=None):
    ev = {"type": "BlockStored", "block_hashes": list(block_hashes),
          "parent_block_hash": parent_block_hash, "token_ids": list(token_ids),
          "block_size": block_size, "lora_id": lora_id, "medium": medium,
          "lora_name": lora_name}
    # omit_defaults: fields with a default are written only when they differ from it
    for k, v in (("extra_keys", extra_keys), ("group_idx", group_idx),
                 ("kv_cache_spec_kind", kv_cache_spec_kind),
                 ("kv_cache_spec_sliding_window", kv_cache_spec_sliding_window)):
        if v is not None:
            ev[k] = v
    return ev


def block_removed(block_hashes, medium="GPU", group_idx=None):
    ev = {"type": "BlockRemoved", "block_hashes": list(block_hashes), "medium": medium}
    if group_idx is not None:
        ev["group_idx"] = group_idx
    return ev


def all_blocks_cleared():
    return {"type": "AllBlocksCleared"}


_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                  "medium", "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind",
                  "kv_cache_spec_sliding_window")
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")


def _as_array(ev):
    """Legacy layout: [tag, fields in declaration order]; trailing defaults omitted
    (the oldest releases stop after medium)."""
    t = ev["type"]
    if t == "BlockStored":
        fields, required = _STORED_FIELDS, 6
    elif t == "BlockRemoved":
        fields, required = _REMOVED_FIELDS, 2
    elif t == "AllBlocksCleared":
        return [t]
    else:  # unknown types keep their own fields, in their order
        return [t] + [v for k, v in ev.items() if k != "type"]
    vals = [ev.get(k) for k in fields]
    n = len(vals)
    while n > required and vals[n - 1] is None:
        n -= 1
    return [t] + vals[:n]


def encode_batch(events, dp_rank=0, layout="map", ts=None, batch_layout=None):
    """The msgpack payload of one EventBatch. events: dicts as block_stored() and the
    others build them; layout: "map" (current vLLM: events as tagged maps, the batch
    a map) or "array" (legacy: tagged arrays in an array batch); batch_layout: the
    batch's own layout when it differs from the events' ("array" with map events:
    [ts, [{...}, ...], rank])."""
    ts = time.time() if ts is None else ts
    if layout not in ("map", "array"):
        raise ValueError(layout)
    evs = events if layout == "map" else [_as_array(e) for e in events]
    if (batch_layout or layout) == "map":
        batch = {"ts": ts, "events": evs, "data_parallel_rank": dp_rank}
        if dp_rank is None:
            del batch["data_parallel_rank"]  # omit_defaults
    elif (batch_layout or layout) == "array":
        batch = [ts, evs, dp_rank]
    else:
        raise ValueError(batch_layout)
    return msgpack.packb(batch, use_bin_type=True)


# ---- the replay ROUTER's protocol ------------------------------------------------

def replay_request(frames):
    """A replay request as the ROUTER receives it: [identity, "", start (8 bytes
    big-endian)] from a DEALER, [identity, start] tolerated. Returns (the prefix of
    every answer, start), or None for a request vLLM would refuse."""
    if len(frames) == 3 and frames[1] == b"":
        prefix, start = frames[:2], frames[2]
    elif len(frames) == 2:
        prefix, start = frames[:1], frames[1]
    else:
        return None
    if len(start) != 8:
        return None
    return prefix, int.from_bytes(start, "big")


def replay_answer(router, prefix, items):
    """Answer a replay request: [prefix..., seq, payload] for every (seq, payload)
    of items (the buffered batches with seq >= start, in order), then the end
    marker [prefix..., -1 as 8 bytes, ""]."""
    for s, p in items:
        router.send_multipart(prefix + [s.to_bytes(8, "big"), p])
    router.send_multipart(prefix + [END_SEQ, b""])
