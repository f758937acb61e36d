#!/usr/bin/env python3
"""Write the hand-made seed inputs of fuzz_pool into fuzz/corpus/fuzz_pool/.

Each seed is a short program in fuzz_pool.c's input format (see the decoder
there): a setup of three bytes, then operations. The seeds walk the fuzzer into
the interesting states at once (eviction order, resurrection, duplicates,
reset-on-release, misuse of every kind, saturated counts, injected allocation
failures, bad configurations, destroy and re-create, two pools on a registry,
events); libFuzzer mutates from there. Inputs the fuzzer found itself are
added with `make fuzz-merge` (named by their SHA-1).

usage: python3 fuzz/seeds.py [outdir]
"""
import os
import sys

# setup byte bits
A_REJECT, B_REJECT, A_FIFO, B_FIFO, A_RESET, A_CALLBACKS, A_EVENTS, REGISTRY = (
    1, 2, 4, 8, 16, 32, 64, 128)
INJECT = 0x80  # opcode bit: fail the next allocation of this call


class Prog:
    def __init__(self, setup, a_blocks, b_blocks):
        self.b = bytearray([setup, (a_blocks - 1) % 48, (b_blocks - 1) % 12])

    def op(self, code, *args, inject=False):
        self.b.append(code | (INJECT if inject else 0))
        self.b.extend(a & 0xff for a in args)
        return self

    # ---- operations (argument bytes as fuzz_pool.c decodes them) ----
    def allocate(self, pool, n, inject=False, out_null=False, evicted_null=False):
        if n == 0:
            sel = 0
        elif n == 'over':
            sel = 1
        elif n == 'absurd':
            sel = 2
        else:
            assert 1 <= n <= 32
            sel = ((n - 1) << 3) | 3
        flags = (4 if out_null else 0) | (8 if evicted_null else 0)
        return self.op(0, pool, sel, flags, inject=inject)

    def stage(self, i, h, out_null=False):
        return self.op(2, i, (h % 16) | (0xf0 if out_null else 0))

    def mutable_release(self, i):
        return self.op(3, i)

    def complete_release(self, i):
        return self.op(4, i, 1)

    def complete_reset(self, i):
        return self.op(4, i, 0)

    def register(self, pool, idx, inject=False, null=False):
        n = len(idx)
        assert n <= 12
        nb = n if not null else 0xf0 | n
        return self.op(5, pool, nb, *idx, inject=inject)

    def lookup(self, pool, kind, hashes, inject=False):
        n = len(hashes)
        for sel in range(256):
            if sel % 3 == kind and (sel >> 2) % 17 == n and (sel & 0xc0) != 0xc0:
                return self.op(6, pool, sel, *hashes, inject=inject)
        raise ValueError("no selector")

    def clone(self, i):
        return self.op(7, i)

    def release(self, i):
        return self.op(8, i)

    def release_n(self, idx):
        return self.op(9, len(idx), *idx)

    def set_reset(self, i, on):
        return self.op(10, i, 0 | (4 if on else 0))

    def use_count(self, i):
        return self.op(10, i, 1)

    def address(self, i):
        return self.op(10, i, 2)

    def downgrade(self, i):
        return self.op(10, i, 3)

    def upgrade(self, i):
        return self.op(11, i)

    def reset_inactive(self, pool, inject=False):
        return self.op(12, pool, inject=inject)

    # forge kinds: table 0 mutable, 1 complete, 2 block, 3 weak
    def copy(self, table, i, j):
        return self.op(13, (0 << 2) | table, i, j)

    def zero(self, table, i):
        return self.op(13, (1 << 2) | table, i, 0)

    def foreign(self, table, i):
        return self.op(13, (2 << 2) | table, i, 0)

    def gen_add(self, table, i, d):
        return self.op(13, (3 << 2) | table, i, d & 0xff)

    def set_id(self, table, i, v):
        return self.op(13, (4 << 2) | table, i, v)

    def set_hash(self, table, i, h):
        return self.op(13, (5 << 2) | table, i, h)

    def saturate(self, pool, block_id, below=0):
        return self.op(13 | 0x10, pool & 1, (below << 6) | block_id)

    def unsaturate(self, pool):
        return self.op(13 | 0x10, (pool & 1) | 2, 0)

    def metrics(self, pool, cap):
        return self.op(14, pool, cap)

    def config(self, case, v, *extra):
        return self.op(14 | 0x10, case, v, *extra)

    def destroy(self, pool):
        return self.op(15, pool)


def seeds():
    out = {}

    # lifecycle on a pool with callbacks, events and a registry
    p = Prog(A_CALLBACKS | A_EVENTS | REGISTRY, 8, 4)
    p.allocate(0, 4)                       # TM[0..3]
    for i in range(4):
        p.stage(i, i)                      # chain 0 -> TC[0..3]
    p.register(0, [0, 1, 2, 3])            # TB[0..3]
    p.downgrade(0)                         # TW[0]
    p.release_n([0, 1, 2, 3])
    p.upgrade(0)                           # TB[4]: resurrected
    p.lookup(0, 0, [0, 1, 2, 3])           # TB[5..8]
    p.release_n([4, 5, 6, 7, 8])
    p.metrics(0, 40)
    p.reset_inactive(0)
    p.destroy(0)
    out["seed-lifecycle"] = p

    # eviction order (lru): four cached blocks, one hit, then allocation pressure
    p = Prog(A_CALLBACKS, 4, 2)
    for k in range(4):
        p.allocate(0, 1).stage(k, 4 + k).register(0, [k]).release(k)
    p.lookup(0, 1, [5])                    # resurrect the second: TB[4]
    p.release(4)                           # back to the MRU end
    p.allocate(0, 3)                       # evicts 4, 6, 7 in that order
    out["seed-lru-order"] = p

    # the same with fifo: the hit does not refresh the arrival
    q = Prog(A_CALLBACKS | A_FIFO, 4, 2)
    q.b[3:] = p.b[3:]
    out["seed-fifo-order"] = q

    # reject duplicates; then allow them, with reset-on-release
    p = Prog(A_CALLBACKS | A_REJECT, 6, 3)
    p.allocate(0, 3).stage(0, 1).stage(1, 1).stage(2, 2)
    p.register(0, [0, 1, 2])               # dedup: both handles on one block
    p.use_count(0).release_n([0, 1, 2])
    out["seed-reject"] = p
    p = Prog(A_CALLBACKS | REGISTRY, 6, 3)
    p.allocate(0, 3).stage(0, 7).stage(1, 7).stage(2, 7)
    p.register(0, [0])                     # TB[0] primary
    p.register(0, [1, 2])                  # TB[1], TB[2] duplicates
    p.set_reset(0, True)
    p.release(0)                           # primary kept by the duplicates
    p.lookup(0, 2, [7, 7, 8])              # scan: two refs on the primary
    p.release_n([2, 3, 1, 4])
    p.reset_inactive(0)
    out["seed-duplicates-reset-flag"] = p

    # misuse: double release, stale after reuse, foreign, zeroed, bad ids and gens
    p = Prog(A_CALLBACKS | REGISTRY, 3, 3)
    p.allocate(0, 1)                       # TM[0]
    p.copy(0, 1, 0)                        # TM[1] = TM[0]
    p.mutable_release(0).mutable_release(1)  # double release
    p.allocate(0, 3)                       # TM[1..3]: slot reused
    p.copy(0, 0, 1).mutable_release(1).mutable_release(0)
    p.stage(2, 3).copy(1, 1, 0).foreign(1, 1)
    p.register(1, [1])                     # a handle of A given to B (relabelled)
    p.foreign(1, 1).register(1, [0])       # A's live handle given to B
    p.register(0, [0, 0])                  # the same handle twice
    p.register(0, [0])                     # TB[0]
    p.copy(2, 1, 0).release(0).release(1).clone(1).set_reset(1, True).address(1)
    p.zero(2, 2).release(2).release_n([2, 1, 3])
    p.allocate(0, 1).set_id(0, 4, 200).mutable_release(4)
    p.set_id(0, 4, 0xff).stage(4, 1)
    p.gen_add(0, 4, 1).mutable_release(4)
    p.gen_add(0, 4, -1).mutable_release(4)
    p.stage(3, 15)                         # invalid hash (mode 3): -EINVAL
    p.stage(3, 4, out_null=True)
    p.complete_reset(0).complete_release(0)
    out["seed-misuse"] = p

    # saturated reference counts
    p = Prog(A_CALLBACKS, 4, 2)
    p.allocate(0, 2).stage(0, 9).stage(1, 9)
    p.register(0, [0])                     # TB[0] on block 0
    p.saturate(0, 0, 0)
    p.clone(0).lookup(0, 0, [9]).lookup(0, 1, [9, 9]).downgrade(0).upgrade(0)
    p.register(0, [1])                     # -EOVERFLOW
    p.unsaturate(0).clone(0).register(0, [1])
    p.saturate(0, 0, 3).clone(0).clone(0).clone(0).clone(0)
    p.unsaturate(0)
    out["seed-saturation"] = p

    # injected allocation failures on large batches
    p = Prog(A_CALLBACKS | REGISTRY, 40, 4)
    p.allocate(0, 16, inject=True)         # -ENOMEM: nothing taken
    p.allocate(0, 12)
    for i in range(12):
        p.stage(i, i % 15)
    p.register(0, list(range(12)), inject=True)
    p.register(0, list(range(12)))
    p.release_n(list(range(12)))
    p.lookup(0, 0, list(range(12)), inject=True)
    p.lookup(0, 1, list(range(12)) + [0, 1, 2, 3], inject=True)
    p.lookup(0, 2, list(range(12)) + [4, 5], inject=True)
    p.reset_inactive(0, inject=True)
    p.lookup(0, 1, list(range(15)) + [15])
    p.release_n(list(range(12)))
    p.reset_inactive(0)
    out["seed-inject"] = p

    # configurations: every case of op_config, valid and not
    p = Prog(0, 2, 2)
    for case in range(10):
        for v in (0, 1, 3, 7, 200, 255):
            p.config(case, v, 9, 12)
    p.op(14 | 0x10 | INJECT, 9, 3)         # valid config, first allocation fails
    out["seed-configs"] = p

    # destroy refused while held, then destroy and re-create; counts, absurd sizes
    p = Prog(A_CALLBACKS | A_EVENTS | REGISTRY | A_FIFO | B_REJECT, 5, 5)
    p.allocate(0, 2).stage(0, 1).register(0, [0]).destroy(0)
    p.allocate(0, 'over').allocate(0, 'absurd').allocate(0, 0).allocate(0, 3, out_null=True)
    p.allocate(1, 3, evicted_null=True).stage(2, 1).stage(3, 2).register(1, [1, 2])
    p.mutable_release(1).mutable_release(4).release_n([0, 1, 2]).complete_release(0)
    p.lookup(0, 0, []).register(0, []).release_n([])
    p.destroy(0).destroy(1)
    p.allocate(0, 5).allocate(0, 1)
    out["seed-destroy-limits"] = p

    # reset on release as the pool default, two pools sharing the registry
    p = Prog(A_RESET | A_CALLBACKS | REGISTRY | A_EVENTS, 3, 3)
    p.allocate(0, 3).allocate(1, 3)
    for i in range(6):
        p.stage(i, 12 + i % 3)
    p.register(0, [0, 1, 2]).register(1, [3, 4, 5])
    p.set_reset(3, False).release_n([0, 1, 2, 3, 4, 5])
    p.lookup(1, 1, [12, 13, 14]).lookup(0, 1, [12, 13, 14])
    out["seed-two-pools-reset"] = p
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_pool")
    os.makedirs(outdir, exist_ok=True)
    for name, prog in seeds().items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(bytes(prog.b))
    print(f"{len(seeds())} seeds written to {outdir}")


if __name__ == "__main__":
    main()
