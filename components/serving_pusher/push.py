"""Publishing a SavedModel into TF Serving's layout ``<serving_root>/<model_name>/<version>/``.

TF Serving watches ``<serving_root>/<model_name>/`` and loads the highest integer version. Publishing:

1. **A version number is reserved** atomically: ``.version-<n>`` is created with ``O_EXCL`` in the
   model folder, so two runs pushing at once never get the same number, and the reservations stay
   as a high-water mark: a number is never handed out twice, even after an operator deletes a
   broken version (the next push gets a new number, not the deleted one's).
2. **The model is copied to a staging folder** named by host, process id and a random suffix (two
   pods of one Deployment have the same process id; the random part keeps their copies apart),
   and the completion marker (``assets.extra/push_complete.json``) is written **last**.
3. **The staging folder is renamed into place.** On a local or POSIX filesystem the rename is
   atomic, so TF Serving sees no version or the whole one. On object stores (``gs://``) a rename is
   a copy: there the marker is what says a version is whole, and the local server and the pipeline
   load only versions that have it (TF Serving itself does not check it: keep object-store model
   roots behind a copy job, or use a filesystem mount).

Staging folders older than :data:`STALE_STAGING_SECONDS` (a push killed mid-copy) are removed by the
next push. A version folder without the marker is never served by the local server.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import time
from typing import List, Optional, Tuple

import tensorflow as tf

from placedemarche.serving import model_contract

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^\d+$")
_RESERVATION = re.compile(r"^\.version-(\d+)$")
STAGING_PREFIX = ".staging-"
STALE_STAGING_SECONDS = 6 * 3600


def versions(model_base: str) -> List[int]:
    """The integer versions already under ``model_base``, ascending (complete or not)."""
    if not tf.io.gfile.isdir(model_base):
        return []
    return sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(model_base) if _VERSION.match(n.rstrip("/")))


def complete_versions(model_base: str) -> List[int]:
    """The versions that carry the completion marker, ascending."""
    return [v for v in versions(model_base)
            if model_contract.is_complete(os.path.join(model_base, str(v)))]


def _reserved(model_base: str) -> List[int]:
    if not tf.io.gfile.isdir(model_base):
        return []
    return sorted(int(m.group(1)) for n in tf.io.gfile.listdir(model_base) if (m := _RESERVATION.match(n.rstrip("/"))))


def reserve_version(model_base: str) -> int:
    """A version number no other push has or will get: above every version and reservation ever made."""
    tf.io.gfile.makedirs(model_base)
    candidate = max(versions(model_base) + _reserved(model_base) + [0]) + 1
    if "://" in model_base:  # object stores have no exclusive create: best effort, with unique staging
        with tf.io.gfile.GFile(os.path.join(model_base, f".version-{candidate}"), "w") as f:
            f.write(_stamp())
        return candidate
    while True:
        try:
            fd = os.open(os.path.join(model_base, f".version-{candidate}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            candidate += 1
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_stamp())
        return candidate


def _stamp() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def staging_name() -> str:
    """``.staging-<host>-<pid>-<random>``: unique across pods that share a process id."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40]
    return f"{STAGING_PREFIX}{host}-{os.getpid()}-{random.SystemRandom().getrandbits(48):012x}"


def content_digest(model_dir: str) -> str:
    """A digest of every file's relative path and bytes (the completion marker excluded)."""
    digest = hashlib.sha256()
    marker = os.path.join(model_contract.ASSETS_EXTRA, model_contract.COMPLETE_MARKER)
    for directory, _, files in sorted(tf.io.gfile.walk(model_dir)):
        for name in sorted(files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, model_dir)
            if relative == marker:
                continue
            digest.update(relative.encode() + b"\0")
            with tf.io.gfile.GFile(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def clean_stale_staging(model_base: str, older_than_seconds: float = STALE_STAGING_SECONDS) -> List[str]:
    """Removes staging folders left by pushes that died (older than the limit); returns them."""
    removed = []
    if not tf.io.gfile.isdir(model_base):
        return removed
    now = time.time()
    for name in tf.io.gfile.listdir(model_base):
        name = name.rstrip("/")
        if not name.startswith(STAGING_PREFIX):
            continue
        path = os.path.join(model_base, name)
        try:
            mtime = tf.io.gfile.stat(path).mtime_nsec / 1e9 if "://" in path else os.stat(path).st_mtime
        except (OSError, tf.errors.NotFoundError):
            continue
        if now - mtime > older_than_seconds:
            tf.io.gfile.rmtree(path)
            removed.append(path)
            logger.warning("removed a staging folder left by an interrupted push: %s", path)
    return removed


def push(saved_model_dir: str, serving_root: str, model_name: str, force: bool = False,
         source_note: Optional[str] = None) -> Tuple[str, bool]:
    """Publishes ``saved_model_dir`` as a new version (see the module docstring).

    Returns ``(version folder, new)``. When the latest complete version already holds exactly these
    files (a re-run of the gate over the same model), nothing is copied and ``new`` is False, so TF
    Serving does not reload the same model under another number; ``force`` pushes anyway (a
    rollback publishes an earlier version again on purpose).

    Raises:
      FileNotFoundError: ``saved_model_dir`` holds no ``saved_model.pb``.
    """
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, model_contract.SAVED_MODEL_FILE)):
        raise FileNotFoundError(f"no saved_model.pb in '{saved_model_dir}': nothing to push")
    base = os.path.join(serving_root, model_name)
    tf.io.gfile.makedirs(base)
    clean_stale_staging(base)
    existing = complete_versions(base)
    digest = content_digest(saved_model_dir)
    if existing and not force:
        latest = os.path.join(base, str(existing[-1]))
        if content_digest(latest) == digest:
            return latest, False
    version = reserve_version(base)
    staging = os.path.join(base, staging_name())
    final = os.path.join(base, str(version))
    marker = {"version": version, "digest": digest, "source": source_note or saved_model_dir,
              "pushed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        if "://" in serving_root:
            _copy_tree(saved_model_dir, staging)
        else:
            shutil.copytree(saved_model_dir, staging)
        model_contract.write_complete_marker(staging, marker)  # last: the copy is whole
        if "://" in serving_root:
            tf.io.gfile.rename(staging, final, overwrite=False)
        else:
            os.rename(staging, final)  # atomic: TF Serving sees no version or the whole one
    except BaseException:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        raise
    return final, True


def _copy_tree(src: str, dst: str) -> None:
    for directory, _, files in tf.io.gfile.walk(src):
        target = os.path.join(dst, os.path.relpath(directory, src))
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, name), overwrite=True)
