"""The struct layouts declared to cffi (ABI mode) must be the C compiler's."""
import json
import os
import subprocess

import pytest

import kvblock
from kvblock._ffi import LAYOUT, ffi


def c_layout():
    exe = os.environ.get("KVBLOCK_LAYOUT_BIN")
    if not exe or not os.path.exists(exe):
        pytest.skip("KVBLOCK_LAYOUT_BIN not set (make check-python builds it)")
    return json.loads(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)


def test_every_declared_struct_matches_the_c_headers():
    c = c_layout()
    for name, fields in LAYOUT.items():
        assert name in c, f"{name}: not printed by layout.c"
        assert ffi.sizeof(name) == c[name]["size"], f"sizeof({name})"
        for f in fields:
            assert ffi.offsetof(name, f) == c[name][f], f"offsetof({name}, {f})"


def test_library_loaded_is_the_one_asked_for():
    want = os.environ.get("KVBLOCK_LIBRARY")
    if want:
        assert os.path.samefile(kvblock.LIBRARY_PATH, want)


def test_constants_written_as_numbers_in_the_fleet_declarations():
    from kvblock._ffi_index import CONSTANTS
    c = c_layout()
    assert c["constants"] == CONSTANTS
    # the enum values the binding passes to C as numbers
    import kvblock.index as ki
    assert len(ki.TIERS) == CONSTANTS["KVB_TIER_COUNT"]
    assert len(ki.DROP_REASONS) == CONSTANTS["KVB_DROP_COUNT"]
    assert len(ki.COUNTERS) == CONSTANTS["KVB_COUNT_COUNT"]
    assert ki.NAME_MAX == CONSTANTS["KVB_INDEX_NAME_MAX"]
    assert ki.NO_RANK == CONSTANTS["KVB_INDEX_NO_RANK"]
    assert ki.DYNAMO_SEED == CONSTANTS["KVB_HASH_DYNAMO_SEED"]
    for name, arr in (("kvb_index_stream_info", "dropped"), ("kvb_index_batch", "dropped")):
        fld = dict(ffi.typeof(name).fields)[arr]
        assert fld.type.length == CONSTANTS["KVB_DROP_COUNT"]


def test_fleet_enum_names_agree_with_the_library():
    import kvblock.index as ki
    if not ki.available():
        pytest.skip("this libkvblock has no fleet index (lib/index.c not built)")
    from kvblock._ffi import lib
    for i, s in enumerate(ki.STATES):
        assert ffi.string(lib.kvb_stream_state_name(i)).decode() == s
    for i, r in enumerate(ki.DROP_REASONS):
        assert ffi.string(lib.kvb_drop_reason_name(i)).decode() == r
    for i, t in enumerate(ki.TIERS):
        assert ffi.string(lib.kvb_tier_name(i)).decode() == t
