"""kvblock: Python binding of the kvblock C library (cffi, ABI mode).

    import kvblock
    with kvblock.Pool(1024, block_size=16, name="gpu") as pool:
        hashes = kvblock.hash_tokens(tokens, 16)
        with pool.match(hashes) as hit:          # prefix hits, one lock
            rest = hashes[len(hit):]
            with pool.put(rest) as new:          # allocate + stage + register
                ...                              # run the step
        # both batches released here (one kvb_block_release_n each)

Errors raise KvbError (an OSError) whose .name is the errno name ("ENOSPC").
See kvblock.core for the classes and docs/ecosystem.md for a tour.
"""
from ._ffi import LIBRARY_PATH, ffi, lib
from .core import (Block, Blocks, Complete, Completes, Event, Hash, Hashes, KvbError,
                   Mutable, Mutables, Pool, Registry, Weak, err_name, hash_block,
                   hash_chain, hash_salt, hash_tokens, strerror)

DYNAMO_SEED = 1337  # KVB_HASH_DYNAMO_SEED: pass as salt_hash for Dynamo's default hashes

__all__ = ["Block", "Blocks", "Complete", "Completes", "Event", "Hash", "Hashes", "KvbError",
           "Mutable", "Mutables", "Pool", "Registry", "Weak", "err_name", "hash_block",
           "hash_chain", "hash_salt", "hash_tokens", "strerror", "LIBRARY_PATH",
           "DYNAMO_SEED"]
