"""Errors of the local server: TF Serving's status names, their gRPC / HTTP codes (one table for both
protocols), and short, safe messages (no TensorFlow graph traces, no server paths)."""

from __future__ import annotations

import logging
import re
from typing import Dict, Tuple

logger = logging.getLogger(__name__)


# TF Serving's status names → (canonical gRPC code, HTTP status of its REST API). The one table
# both protocols map errors with.
STATUS_CODES: Dict[str, Tuple[int, int]] = {
    "OK": (0, 200),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "RESOURCE_EXHAUSTED": (8, 413),
    "FAILED_PRECONDITION": (9, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
}


_NAME_OF_CODE = {code: name for name, (code, _) in STATUS_CODES.items()}


_MAX_MESSAGE_CHARS = 300


class ServingError(Exception):
    """An error with TF Serving's status name (``code``: NOT_FOUND, INVALID_ARGUMENT, ...).

    ``message`` is what the client sees: short, without internal details (no server paths, no
    TensorFlow node names or traces). ``grpc_code`` and ``http_status`` come from :data:`STATUS_CODES`.
    """

    def __init__(self, code: str, message: str):
        if code not in STATUS_CODES:
            raise ValueError(f"unknown status name '{code}'")
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def grpc_code(self) -> int:
        return STATUS_CODES[self.code][0]

    @property
    def http_status(self) -> int:
        return STATUS_CODES[self.code][1]


_PATH_TOKEN = re.compile(r"(?:[A-Za-z][\w+.-]*://[^\s'\"]+|(?<![\w.~/-])/(?:[^\s'\"/]+/)*[^\s'\"/]*)")


_NODE_NOISE = re.compile(r"\[\[.*?\]\]|\[Op:[^\]]*\]|\{\{[^}]*\}\}")


_ASSERTION = re.compile(r"assertion failed: \[(?P<message>[^\]]*)\]")


_DECODE_ERRORS = re.compile(r"image file format|JPEG|PNG|GIF|BMP|decode|Invalid (?:PNG|JPEG) data", re.IGNORECASE)


PICTURE_ERROR = "not a picture the model can decode (JPEG, PNG, GIF or BMP)"


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path or URL replaced by its last component."""
    def last(match: "re.Match[str]") -> str:
        token = match.group(0).rstrip("/")
        return token.rsplit("/", 1)[-1] or "/"
    return _PATH_TOKEN.sub(last, text)


def shorten(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def summarize_tf_error(message: str) -> str:
    """The first meaningful line of a TensorFlow error, without node names, traces or paths.

    ``Graph execution error: Detected at node map/while/DecodeImage defined at ... Unknown image file
    format. One of JPEG, PNG, GIF, BMP required. [[{{node ...}}]] [Op:__inference_...]`` becomes
    ``Unknown image file format. One of JPEG, PNG, GIF, BMP required.``; an assertion of the model
    (``assertion failed: [msg] [Condition x == y ...]``) becomes ``msg``.
    """
    in_trace = False
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line.startswith("Graph execution error"):
            continue
        if line.startswith("Detected at node") or line.startswith("Traceback"):
            in_trace = True
            continue
        if in_trace and (raw[:1].isspace() or line.startswith(("File ", "<stack traces"))):
            continue
        in_trace = False
        cleaned = _NODE_NOISE.sub("", line).strip()
        if not cleaned:
            continue
        assertion = _ASSERTION.search(cleaned)
        if assertion:
            cleaned = assertion.group("message").replace("\\'", "'").strip()
        return shorten(scrub_paths(cleaned))
    return "the model refused the input"


def short_reason(error: BaseException) -> str:
    """``Type: first line`` of an exception, paths scrubbed (what a status may show)."""
    text = getattr(error, "message", None) or str(error)
    first = summarize_tf_error(text) if text else ""
    return shorten(f"{type(error).__name__}: {first}" if first else type(error).__name__, 200)


class BatcherStopped(Exception):
    """The batcher was stopped (its version unloaded); the caller runs the model directly."""
