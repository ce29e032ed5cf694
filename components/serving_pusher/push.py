"""Publishing a SavedModel into TF Serving's layout ``<serving_root>/<model_name>/<version>/``.

TF Serving watches ``<serving_root>/<model_name>/`` and loads the highest integer version. The model
is first copied to a hidden staging folder next to the versions, then renamed into place: on a local
or POSIX filesystem the rename is atomic, so the server never sees half a model. (On object stores
such as GCS a rename is a copy; there TF Serving may see a partly copied version for a moment.)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from typing import List, Tuple

import tensorflow as tf

_VERSION = re.compile(r"^\d+$")


def versions(model_base: str) -> List[int]:
    """The integer versions already under ``model_base``, ascending."""
    if not tf.io.gfile.isdir(model_base):
        return []
    return sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(model_base) if _VERSION.match(n.rstrip("/")))


def content_digest(model_dir: str) -> str:
    """A digest of every file's relative path and bytes: equal digests mean the same model."""
    digest = hashlib.sha256()
    for directory, _, files in sorted(tf.io.gfile.walk(model_dir)):
        for name in sorted(files):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, model_dir).encode() + b"\0")
            with tf.io.gfile.GFile(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def push(saved_model_dir: str, serving_root: str, model_name: str, force: bool = False) -> Tuple[str, bool]:
    """Publishes ``saved_model_dir`` as the next version.

    Returns ``(version folder, new)``. When the latest version already holds exactly these files
    (a re-run of the gate over the same model), nothing is copied and ``new`` is False, so TF
    Serving does not reload the same model under another number; ``force`` pushes anyway (a
    rollback publishes an earlier version again on purpose).

    Raises:
      FileNotFoundError: ``saved_model_dir`` holds no ``saved_model.pb``.
    """
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no saved_model.pb in '{saved_model_dir}': nothing to push")
    base = os.path.join(serving_root, model_name)
    tf.io.gfile.makedirs(base)
    existing = versions(base)
    if existing and not force:
        latest = os.path.join(base, str(existing[-1]))
        if content_digest(latest) == content_digest(saved_model_dir):
            return latest, False
    version = (existing or [0])[-1] + 1
    staging = os.path.join(base, f".staging-{version}-{os.getpid()}")
    final = os.path.join(base, str(version))
    if "://" in serving_root:
        _copy_tree(saved_model_dir, staging)
        tf.io.gfile.rename(staging, final, overwrite=False)
    else:
        shutil.copytree(saved_model_dir, staging)
        os.rename(staging, final)  # atomic: TF Serving sees no version or the whole one
    return final, True


def _copy_tree(src: str, dst: str) -> None:
    for directory, _, files in tf.io.gfile.walk(src):
        target = os.path.join(dst, os.path.relpath(directory, src))
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, name), overwrite=True)
