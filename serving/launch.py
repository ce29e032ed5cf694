"""Starting a model server for ``placedemarche serve``: TF Serving when its binary is installed, else the
local stand-in, kept running until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)

TF_SERVING_BINARY = "tensorflow_model_server"


def tf_serving_command(binary: str, model_name: str, base_path: str, grpc_port: int, rest_port: int) -> List[str]:
    """The ``tensorflow_model_server`` command line for one model (batching on). TF Serving binds every
    interface; in a container that is what the Service needs (``kubernetes/serving``)."""
    return [binary, f"--model_name={model_name}", f"--model_base_path={base_path}", f"--port={grpc_port}",
            f"--rest_api_port={rest_port}", "--enable_batching=true"]


def find_tf_serving() -> Optional[str]:
    return shutil.which(TF_SERVING_BINARY)


def run_until_stopped(server) -> None:
    """Blocks until SIGTERM or Ctrl-C, then stops ``server`` (anything with ``stop()``)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()


def exec_tf_serving(command: List[str]) -> None:  # pragma: no cover - replaces the process
    os.execv(command[0], command)


def parse_labels(items: List[str]) -> Dict[str, int]:
    """``["stable=3", "canary=4"]`` → ``{"stable": 3, "canary": 4}``.

    Raises:
      ValueError: an item does not look like ``label=VERSION``.
    """
    labels = {}
    for item in items:
        label, _, version = item.partition("=")
        if not label or not version.isdigit():
            raise ValueError(f"--label '{item}' must look like stable=3")
        labels[label] = int(version)
    return labels
