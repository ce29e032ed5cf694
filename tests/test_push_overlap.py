"""Pushes stay safe when runs overlap: distinct versions for simultaneous pushes, nothing visible from a killed one.

Each pusher is its own process (as two pipeline runs, or two pods, would be), started together and
released at once through a file, so their reservations and copies overlap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.serving import model_contract

PUSHER = """
import os, sys, time
go, src, root = sys.argv[1:4]
from placedemarche.components.serving_pusher import push
while not os.path.exists(go):
    time.sleep(0.005)
final, new = push.push(src, root, "product_category")
print(final)
"""

# Pushes a model whose copy stalls after its first file (and says so), so the test can kill it mid-copy.
STALLED = """
import functools, os, shutil, sys, time
src, root, copying = sys.argv[1:4]
from placedemarche.components.serving_pusher import push

def slow_copy(a, b, **kw):
    shutil.copy2(a, b, **kw)
    open(copying, "w").close()
    time.sleep(600)

shutil.copytree = functools.partial(shutil.copytree, copy_function=slow_copy)
push.push(src, root, "product_category")
"""


def _model(path: Path, tag: str) -> Path:
    """A folder a push accepts (``saved_model.pb`` and variables), with content of its own."""
    (path / "variables").mkdir(parents=True)
    (path / model_contract.SAVED_MODEL_FILE).write_bytes(f"graph of {tag}".encode() * 1000)
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(2_000_000))
    (path / "variables" / "variables.index").write_bytes(tag.encode())
    return path


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_simultaneous_pushes_get_distinct_versions_and_each_version_is_whole(tmp_path):
    sources = [_model(tmp_path / f"model{i}", f"model {i}") for i in range(4)]
    root, go = tmp_path / "serving", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(go), str(s), str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for s in sources]
    time.sleep(8)  # let every process import TensorFlow and wait at the start line
    go.touch()
    finals = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        finals.append(out.strip().splitlines()[-1])
    base = root / "product_category"
    assert sorted(int(Path(f).name) for f in finals) == [1, 2, 3, 4]  # no number handed out twice
    assert push_lib.versions(str(base)) == push_lib.complete_versions(str(base)) == [1, 2, 3, 4]
    for source, final in zip(sources, finals):  # each version holds exactly its own model, marker last
        marker = json.loads((Path(final) / model_contract.ASSETS_EXTRA / model_contract.COMPLETE_MARKER).read_text())
        assert marker["digest"] == push_lib.content_digest(str(source)) == push_lib.content_digest(final)
        assert marker["version"] == int(Path(final).name)
    assert not [n for n in os.listdir(base) if n.startswith(push_lib.STAGING_PREFIX)]


def test_a_push_killed_mid_copy_leaves_no_version_and_the_next_push_is_whole(tmp_path):
    root = tmp_path / "serving"
    base = root / "product_category"
    first = _model(tmp_path / "first", "first")
    push_lib.push(str(first), str(root), "product_category")
    copying = tmp_path / "copying"
    stalled = subprocess.Popen([sys.executable, "-c", STALLED, str(_model(tmp_path / "killed", "killed")), str(root),
                                str(copying)], stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 90
    while not copying.exists():
        assert stalled.poll() is None, stalled.stderr.read()
        assert time.monotonic() < deadline, "the stalled push never started copying"
        time.sleep(0.05)
    stalled.send_signal(signal.SIGKILL)
    stalled.wait(timeout=30)
    # What TF Serving and the local server see: version 1 only; the half copy is a hidden staging folder.
    assert push_lib.versions(str(base)) == push_lib.complete_versions(str(base)) == [1]
    staging = [n for n in os.listdir(base) if n.startswith(push_lib.STAGING_PREFIX)]
    assert len(staging) == 1 and not (base / staging[0] / model_contract.ASSETS_EXTRA / model_contract.COMPLETE_MARKER).exists()
    # The killed push's reserved number is never reused; the next push is whole under a new one.
    final, new = push_lib.push(str(_model(tmp_path / "next", "next")), str(root), "product_category")
    assert new and Path(final).name == "3" and push_lib.complete_versions(str(base)) == [1, 3]
    # Its leftovers go once they are stale (after six hours by default; at once here).
    assert push_lib.clean_stale_staging(str(base), older_than_seconds=0)
    assert not [n for n in os.listdir(base) if n.startswith(push_lib.STAGING_PREFIX)]


@pytest.mark.parametrize("leftover", [".staging-host-1-abc", ".version-7"])
def test_leftovers_of_a_push_are_not_versions(tmp_path, leftover):
    base = tmp_path / "product_category"
    base.mkdir()
    if leftover.startswith(push_lib.STAGING_PREFIX):
        (base / leftover).mkdir()
    else:
        (base / leftover).touch()
    assert push_lib.versions(str(base)) == []
    assert push_lib.reserve_version(str(base)) == (8 if leftover == ".version-7" else 1)
