"""The local server's data plane (kserve's pattern): what both protocols do once a request is decoded,
and TF Serving's REST JSON encoding (row and columnar formats, ``{"b64": ...}``, strict parsing)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from placedemarche.serving import model_contract as contract
from placedemarche.serving.models import STATUS_CODES, LoadedVersion, ModelStore, ServingError, shorten  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback: this machine only, unless told 0.0.0.0


MAX_JSON_DEPTH = 32


class DataPlane:
    """Model lookups, status and predictions over one ModelStore, for every transport."""

    def __init__(self, store: ModelStore, request_log=None):
        self.store = store
        self.request_log = request_log  # request_log.RequestLog, or None: nothing is logged

    @property
    def model_name(self) -> str:
        return self.store.model_name

    def _check_name(self, model_name: str) -> None:
        if model_name != self.store.model_name:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({shorten(model_name, 100)})")

    def resolve(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> LoadedVersion:
        """The loaded version a request names (by number, label, or the newest)."""
        self._check_name(model_name)
        return self.store.get(version, label)

    def status(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> List[Dict[str, Any]]:
        self._check_name(model_name)
        return self.store.status(version, label)

    def predict(self, loaded: LoadedVersion, signature_name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        signature_name = signature_name or contract.SERVING_DEFAULT
        outputs = loaded.run(signature_name, inputs)
        if self.request_log is not None:  # after the answer is computed; a logging failure never fails it
            self.request_log.record(loaded.version, signature_name, inputs, outputs)
        return outputs

    @staticmethod
    def as_serving_error(error: BaseException, what: str) -> ServingError:
        """A ServingError for any failure: itself, or INTERNAL with a reference (details logged)."""
        if isinstance(error, ServingError):
            return error
        reference = uuid.uuid4().hex[:12]
        logger.error("%s failed (reference %s)", what, reference, exc_info=error)
        return ServingError("INTERNAL", f"internal error while serving the request (reference {reference}; "
                            "the details are in the server's log)")


def decode_json(raw: bytes) -> Any:
    """The request body as JSON; any malformed body is INVALID_ARGUMENT (never a server error)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: the body is not UTF-8 (byte {e.start})") from e
    try:
        body = json.loads(text or "null")
    except json.JSONDecodeError as e:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {e.msg} at line {e.lineno} column {e.colno}") from e
    except RecursionError as e:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: nested more than {MAX_JSON_DEPTH} levels deep") from e
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {shorten(str(e), 120)}") from e
    _check_depth(body)
    return body


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _utf8(value: str, name: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': a string is not valid Unicode (lone surrogate "
                           f"\\u{ord(value[e.start]):04x}); send arbitrary bytes as {{\"b64\": \"...\"}}") from e


def _decode_value(value: Any, name: str) -> Any:
    """{"b64": "..."} → bytes and strings → UTF-8 bytes, recursively; numbers unchanged; else an error."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            encoded = value["b64"]
            if not isinstance(encoded, str):
                raise ServingError("INVALID_ARGUMENT", f"input '{name}': \"b64\" must be a string, "
                                   f"not {_json_type(encoded)}")
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ServingError("INVALID_ARGUMENT", f"input '{name}': Unable to base64 decode: {e}") from e
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': unexpected object with keys "
                           f"{[shorten(str(k), 40) for k in sorted(value)[:5]]}: binary values must be given as "
                           '{"b64": "<base64>"}')
    if isinstance(value, list):
        return [_decode_value(v, name) for v in value]
    if isinstance(value, str):
        return _utf8(value, name)
    if value is None:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': null is not a value")
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _leaves(value: Any):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _to_array(value: Any, name: str) -> np.ndarray:
    """A JSON value of one input as a NumPy array: strings (object array of bytes) or numbers."""
    decoded = _decode_value(value, name)
    leaves = list(_leaves(decoded))
    strings = [isinstance(v, bytes) for v in leaves]
    if any(strings) and not all(strings):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' mixes strings and numbers")
    try:
        if leaves and all(strings):
            array = np.array(decoded, dtype=object)
            if any(not isinstance(v, bytes) for v in array.flat):
                raise ValueError("ragged")
        else:
            array = np.array(decoded)
            if array.dtype == object:
                raise ValueError("ragged or out of range")
    except ValueError as e:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': inputs of inconsistent shape (ragged lists) or "
                           "numbers out of range") from e
    return array


def parse_predict_body(body: Any, input_names) -> Tuple[str, Dict[str, np.ndarray], bool]:
    """(signature name, inputs, row format?) from a REST predict body.

    ``input_names``: the inputs an unnamed value may be for (those without a default); unnamed
    values need exactly one.
    """
    if not isinstance(body, dict):
        raise ServingError("INVALID_ARGUMENT", "the request body must be a JSON object")
    signature = body.get("signature_name") or contract.SERVING_DEFAULT
    if not isinstance(signature, str):
        raise ServingError("INVALID_ARGUMENT", f"\"signature_name\" must be a string, not {_json_type(signature)}")
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", 'JSON request must have exactly one of "instances" (row format) or '
                           '"inputs" (columnar format)')
    input_names = list(input_names)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError("INVALID_ARGUMENT", f'"instances" must be a non-empty list, not {_json_type(rows)}'
                               if not isinstance(rows, list) else '"instances" must be a non-empty list')
        named = all(isinstance(r, dict) and set(r) != {"b64"} for r in rows)
        if named:
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise ServingError("INVALID_ARGUMENT", "every instance must name the same inputs")
            return signature, {k: _to_array([r[k] for r in rows], k) for k in sorted(keys)}, True
        if any(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
            raise ServingError("INVALID_ARGUMENT", "either every instance names its inputs or none does")
        if len(input_names) != 1:
            raise ServingError("INVALID_ARGUMENT", f"the signature takes inputs {input_names}: name them in each "
                               "instance")
        return signature, {input_names[0]: _to_array(rows, input_names[0])}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        return signature, {k: _to_array(v, k) for k, v in inputs.items()}, False
    if len(input_names) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature takes inputs {input_names}: name them in \"inputs\"")
    return signature, {input_names[0]: _to_array(inputs, input_names[0])}, False


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def format_predict_response(outputs: Dict[str, np.ndarray], row: bool) -> Dict[str, Any]:
    if row:
        names = sorted(outputs)
        n = len(next(iter(outputs.values())))
        if len(names) == 1:
            return {"predictions": _jsonable(outputs[names[0]])}
        columns = {k: _jsonable(v) for k, v in outputs.items()}
        return {"predictions": [{k: columns[k][i] for k in names} for i in range(n)]}
    if len(outputs) == 1:
        return {"outputs": _jsonable(next(iter(outputs.values())))}
    return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}


def signature_metadata(version) -> Dict[str, Any]:
    """The signature definitions in TF Serving's metadata JSON shape."""

    def tensor(spec):
        dims = [{"size": str(d if d is not None else -1)} for d in (spec.shape.as_list() if spec.shape.rank is not None else [])]
        return {"dtype": f"DT_{spec.dtype.name.upper()}", "tensor_shape": {"dim": dims, "unknown_rank": spec.shape.rank is None},
                "name": spec.name or ""}

    defs = {}
    for name, sig in version.signatures.items():
        defs[name] = {
            "inputs": {k: tensor(s) for k, s in sig.structured_input_signature[1].items()},
            "outputs": {k: tensor(s) for k, s in sig.structured_outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }
    return {"signature_def": {"signature_def": defs}}

