"""Where a request meets a loaded model: ``LoadedVersion.run`` fills defaulted inputs, checks names, ranks,
shapes and types, calls the signature and names the failing instance(s) when a call fails."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from placedemarche.serving import model_contract as contract
from placedemarche.serving.errors import (  # noqa: F401
    _DECODE_ERRORS,
    _NAME_OF_CODE,
    PICTURE_ERROR,
    BatcherStopped,
    ServingError,
    short_reason,
    shorten,
    summarize_tf_error,
)

if TYPE_CHECKING:
    from placedemarche.serving.batching import Batcher

logger = logging.getLogger(__name__)


# Inputs a model broadcasts when a request gives one value for all rows (the model's own
# ``_broadcast_text``): the batcher repeats them to the request's rows before merging requests.
BROADCAST_INPUTS = frozenset({contract.TEXT})


def _call(signature, tensors) -> Dict[str, np.ndarray]:
    """One call of a signature; TensorFlow's status errors become short ServingErrors."""
    import tensorflow as tf

    try:
        outputs = signature(**tensors)
    except tf.errors.OpError as e:  # e.g. bytes that are not a picture, the model's own assertions
        name = _NAME_OF_CODE.get(e.error_code, "UNKNOWN")
        if name in ("INTERNAL", "UNKNOWN"):
            raise  # a fault of the model or the server: logged in full by the caller, not shown
        logger.debug("signature call failed: %s", e.message)
        raise ServingError(name, summarize_tf_error(e.message)) from e
    return {k: v.numpy() for k, v in outputs.items()}


def _rows(arrays: Dict[str, np.ndarray]) -> Optional[int]:
    """The common leading dimension of all inputs, or None when they have none."""
    lengths = {len(a) for a in arrays.values() if np.ndim(a) >= 1}
    if len(lengths) != 1 or any(np.ndim(a) == 0 for a in arrays.values()):
        return None
    return lengths.pop()


def _failing_rows(run: Callable[[Dict[str, np.ndarray]], Any], arrays: Dict[str, np.ndarray], lo: int, hi: int,
                  limit: int = 8) -> List[Tuple[int, ServingError]]:
    """Rows in ``[lo, hi)`` that fail alone, by bisection (``[lo, hi)`` is known to fail)."""
    if hi - lo == 1:
        try:
            run({k: v[lo:hi] for k, v in arrays.items()})
        except ServingError as e:
            return [(lo, e)]
        return []
    found: List[Tuple[int, ServingError]] = []
    mid = (lo + hi) // 2
    for a, b in ((lo, mid), (mid, hi)):
        if len(found) >= limit:
            break
        try:
            run({k: v[a:b] for k, v in arrays.items()})
        except ServingError as e:
            if e.code != "INVALID_ARGUMENT":
                raise
            found.extend(_failing_rows(run, arrays, a, b, limit - len(found)) if b - a > 1 else [(a, e)])
    return found


_MODEL_PICTURE_ERROR = re.compile(r"^picture \d+ of the request: (?P<reason>.+)$", re.DOTALL)


def _describe(error: ServingError, arrays: Dict[str, np.ndarray]) -> Tuple[str, Optional[str]]:
    """(reason, input it is about) for a failed single instance."""
    own = _MODEL_PICTURE_ERROR.match(error.message)
    if contract.IMAGES in arrays and own:  # the model's own words (its decoding's checks: format, pixel cap)
        return own.group("reason"), contract.IMAGES
    if contract.IMAGES in arrays and _DECODE_ERRORS.search(error.message):
        return PICTURE_ERROR, contract.IMAGES
    return error.message, (next(iter(arrays)) if len(arrays) == 1 else None)


def call_signature(signature, arrays: Dict[str, np.ndarray], dtypes: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Calls ``signature`` on NumPy inputs; when a call of several instances is refused, names them.

    A failure of a multi-instance call (INVALID_ARGUMENT) is narrowed down to the instance(s) that
    fail alone, by bisection, and reported as ``instance 2 of 3 ('images'): not a JPEG, PNG, GIF or
    BMP picture (...)`` (instances count from 1; the model's own words where it has them). When no instance fails alone the
    batch as a whole was refused, and that message is reported.
    """
    import tensorflow as tf

    def run(part: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return _call(signature, {k: tf.constant(v, dtype=dtypes[k]) for k, v in part.items()})

    try:
        return run(arrays)
    except ServingError as e:
        if e.code != "INVALID_ARGUMENT":
            raise
        n = _rows(arrays)
        if n is None or n == 0:
            raise
        bad = _failing_rows(run, arrays, 0, n) if n > 1 else [(0, e)]
        if not bad:
            raise
        row, first = bad[0]
        reason, input_name = _describe(first, arrays)
        where = f"instance {row + 1} of {n}" + (f" ('{input_name}')" if input_name else "")
        more = ""
        if len(bad) > 1:
            more = f"; also instance(s) {', '.join(str(r + 1) for r, _ in bad[1:])}"
        raise ServingError("INVALID_ARGUMENT", f"{where}: {reason}{more}") from e


@dataclass
class LoadedVersion:
    """A loaded SavedModel version: its signatures, their default inputs, and its batcher."""

    version: int
    path: str
    model: object  # the loaded SavedModel
    signatures: Dict[str, object]
    batcher: Optional["Batcher"] = None
    loaded_at: float = field(default_factory=time.time)
    defaults: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # signature → input → value

    def signature(self, signature_name: str):
        if signature_name not in self.signatures:
            raise ServingError("INVALID_ARGUMENT", f"Serving signature name: \"{shorten(str(signature_name), 100)}\" "
                               f"not found in signature def (available: {sorted(self.signatures)})")
        return self.signatures[signature_name]

    def input_names(self, signature_name: str) -> Tuple[List[str], List[str]]:
        """(all inputs, inputs without a default) of a signature, sorted."""
        expected = sorted(self.signature(signature_name).structured_input_signature[1])
        defaults = self.defaults.get(signature_name, {})
        return expected, [n for n in expected if n not in defaults]

    def batchable(self, signature_name: str) -> bool:
        """Whether every input of the signature is a rank-1 string tensor (rows can be merged)."""
        import tensorflow as tf

        specs = self.signature(signature_name).structured_input_signature[1].values()
        return bool(specs) and all(s.dtype == tf.string and s.shape.rank == 1 for s in specs)

    def run(self, signature_name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs a signature on NumPy inputs (what both protocols decoded).

        Inputs the request left out are filled with the signature's defaults; each input is checked
        against the signature (name, rank, shape, strings or numbers) before TensorFlow sees it.
        Requests to the batched signature go through the batcher.

        Raises:
          ServingError: INVALID_ARGUMENT naming the input or instance at fault.
        """
        signature = self.signature(signature_name)
        expected = signature.structured_input_signature[1]
        given = dict(inputs)
        for name, value in self.defaults.get(signature_name, {}).items():
            if name in expected and name not in given:
                given[name] = value
        missing, unknown = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        if missing or unknown:
            parts = ([f"missing input(s) {missing}"] if missing else []) + \
                    ([f"unexpected input(s) {[shorten(str(u), 60) for u in unknown[:5]]}"] if unknown else [])
            raise ServingError("INVALID_ARGUMENT", f"signature '{signature_name}' takes inputs {sorted(expected)}: "
                               + "; ".join(parts))
        arrays = {name: _checked(name, expected[name], value) for name, value in given.items()}
        dtypes = {name: spec.dtype for name, spec in expected.items()}
        if self.batchable(signature_name):
            arrays, rows = align_rows(arrays)
            if self.batcher is not None and signature_name == self.batcher.signature_name:
                try:
                    return self.batcher.submit(arrays, rows)
                except BatcherStopped:  # unloaded while this request ran: the model is still here
                    pass
        return call_signature(signature, arrays, dtypes)


def _checked(name: str, spec, value: Any) -> np.ndarray:
    """``value`` as a NumPy array that fits ``spec`` (rank, shape, strings or numbers)."""
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    rank = spec.shape.rank
    if rank is not None and array.ndim != rank:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' must have rank {rank} (shape {spec.shape}), "
                           f"got shape {list(array.shape)}")
    if not spec.shape.is_compatible_with(array.shape):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' must have shape {spec.shape}, got {list(array.shape)}")
    wants_strings = spec.dtype.name == "string"
    if array.size:
        if array.dtype == object:
            is_strings = all(isinstance(v, (bytes, str)) for v in array.flat)
            if not is_strings:
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' holds values that are neither strings nor numbers")
        else:
            is_strings = array.dtype.kind in "SU"
            if not is_strings and array.dtype.kind not in "biuf":
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' has unsupported values ({array.dtype})")
        if wants_strings and not is_strings:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' takes strings (DT_STRING), got numbers")
        if not wants_strings and is_strings:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' takes numbers (DT_{spec.dtype.name.upper()}), "
                               "got strings")
    if wants_strings and array.dtype != object:
        array = array.astype(object)
    return array


def align_rows(arrays: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], int]:
    """Rank-1 inputs of one request, aligned to the same number of rows.

    The rows are those of the inputs the model does not broadcast (``images``); an input it
    broadcasts (``text``) may hold one value for all of them, and is repeated to every row (merged
    requests must line up row by row).

    Raises:
      ServingError: INVALID_ARGUMENT naming the inputs and their lengths.
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    rows_of = {name: n for name, n in lengths.items() if name not in BROADCAST_INPUTS} or lengths
    if len(set(rows_of.values())) > 1:
        described = ", ".join(f"'{k}' has {v}" for k, v in sorted(rows_of.items()))
        raise ServingError("INVALID_ARGUMENT", f"inputs of different lengths: {described} values")
    rows = max(rows_of.values())
    aligned = {}
    for name, array in arrays.items():
        if len(array) == rows:
            aligned[name] = array
        elif len(array) == 1 and name in BROADCAST_INPUTS:
            aligned[name] = np.repeat(array, rows)
        else:
            others = ", ".join(f"'{k}' has {v}" for k, v in sorted(rows_of.items()) if k != name)
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' has {len(array)} values but {others}: give one "
                               f"'{name}' per row, or a single one for all rows")
    return aligned, rows

