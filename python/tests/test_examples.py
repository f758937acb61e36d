"""python/examples/replay.py runs and reports what it should."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPLAY = os.path.join(HERE, "..", "examples", "replay.py")


def test_replay_example_on_a_small_synthetic_workload():
    out = subprocess.run([sys.executable, REPLAY, "--synthetic", "400", "--capacity", "512",
                          "--repeat", "2"], check=True, capture_output=True, text=True).stdout
    assert "400 requests" in out
    m = re.search(r"hit ratio ([0-9.]+)%", out)
    assert m and 0.0 < float(m.group(1)) < 100.0
    assert re.search(r"python batch path \(acquire\): \d+ ns per block ref", out)


def test_the_python_scheduler_step_of_docs_ecosystem_md():
    doc = open(os.path.join(HERE, "..", "..", "docs", "ecosystem.md")).read()
    block = doc.split("<!-- ecosystem-py:begin -->")[1].split("<!-- ecosystem-py:end -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(HERE, "..") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert "7 full blocks, 6 from the cache" in out
    assert "events: ['stored', 'stored']" in out
