"""kvblock: Python binding of the kvblock C library (cffi, ABI mode).

    import kvblock
    with kvblock.Pool(1024, block_size=16, name="gpu") as pool:
        hashes = kvblock.hash_tokens(tokens, 16)
        with pool.match(hashes) as hit:          # prefix hits, one lock
            rest = hashes[len(hit):]
            with pool.put(rest) as new:          # allocate + stage + register
                ...                              # run the step
        # both batches released here (one kvb_block_release_n each)
        blocks, hits = pool.acquire(hashes)      # or: all of it in one call and one lock
        blocks.release()

The fleet index (FLEET.md), over the C index and its ZeroMQ subscriber:

    with kvblock.Index(block_size=16) as idx, kvblock.Subscriber(idx) as sub:
        sub.add_worker("w1", "tcp://10.0.0.1:5557", replay="tcp://10.0.0.1:5558")
        best = idx.match_tokens(tokens, k=1)   # [MatchResult(worker, dp_rank, device, ...)]

and a client of the kvb-indexer daemon: kvblock.FleetClient("http://127.0.0.1:8181").
See kvblock.index and kvblock.fleet_client.

Errors raise KvbError (an OSError) whose .name is the errno name ("ENOSPC").
See kvblock.core for the classes and docs/ecosystem.md for a tour.
"""
from ._ffi import LIBRARY_PATH, ffi, lib
from .core import (Block, Blocks, Complete, Completes, Event, Hash, Hashes, KvbError,
                   Mutable, Mutables, Pool, Registry, Weak, err_name, hash_block,
                   hash_chain, hash_salt, hash_tokens, strerror)
from .fleet_client import FleetClient, FleetError
from .index import (Batch, Index, IndexEvent, MatchResult, Matches, Subscriber, decode,
                    salt_key)

DYNAMO_SEED = 1337  # KVB_HASH_DYNAMO_SEED: pass as salt_hash for Dynamo's default hashes

__all__ = ["Block", "Blocks", "Complete", "Completes", "Event", "Hash", "Hashes", "KvbError",
           "Mutable", "Mutables", "Pool", "Registry", "Weak", "err_name", "hash_block",
           "hash_chain", "hash_salt", "hash_tokens", "strerror", "LIBRARY_PATH",
           "DYNAMO_SEED",
           # the fleet index (kvblock.index) and the kvb-indexer client (kvblock.fleet_client)
           "Batch", "Index", "IndexEvent", "MatchResult", "Matches", "Subscriber", "decode",
           "salt_key", "FleetClient", "FleetError"]
