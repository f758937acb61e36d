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
