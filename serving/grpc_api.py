"""The gRPC transport of the local server: TF Serving's PredictionService and ModelService over the
shared data plane; every ``TensorProto`` is checked against its declared shape before it is materialised."""

from __future__ import annotations

import logging
import math
from concurrent import futures

import numpy as np

from placedemarche.serving import model_contract as contract
from placedemarche.serving.dataplane import (
    DEFAULT_HOST,
    DataPlane,  # noqa: F401
)
from placedemarche.serving.errors import shorten
from placedemarche.serving.models import STATUS_CODES, ServingError  # noqa: F401
from placedemarche.serving.rest import DEFAULT_MAX_REQUEST_BYTES  # noqa: F401

logger = logging.getLogger(__name__)


DEFAULT_MAX_INPUT_ELEMENTS = 100_000  # per gRPC string input, or per value a TensorProto would repeat


_MAX_RANK = 8


_MAX_DIM = 2 ** 31 - 1


def _dtype_fields():
    from tensorflow.core.framework import types_pb2 as t

    # dtype → (the TensorProto field holding its values, bytes per element in tensor_content)
    return {t.DT_FLOAT: ("float_val", 4), t.DT_DOUBLE: ("double_val", 8), t.DT_HALF: ("half_val", 2),
            t.DT_BFLOAT16: ("half_val", 2), t.DT_INT8: ("int_val", 1), t.DT_UINT8: ("int_val", 1),
            t.DT_INT16: ("int_val", 2), t.DT_UINT16: ("int_val", 2), t.DT_INT32: ("int_val", 4),
            t.DT_INT64: ("int64_val", 8), t.DT_UINT32: ("uint32_val", 4), t.DT_UINT64: ("uint64_val", 8),
            t.DT_BOOL: ("bool_val", 1), t.DT_STRING: ("string_val", None)}


def tensor_proto_to_array(name: str, proto, max_elements: int = DEFAULT_MAX_INPUT_ELEMENTS) -> np.ndarray:
    """A request's TensorProto as a NumPy array, checked BEFORE anything is materialised.

    Refused (INVALID_ARGUMENT): an unsupported dtype, an unknown rank or more than 8 dimensions, a
    negative or huge dimension, ``tensor_content`` whose size is not shape x itemsize, more values
    than the shape holds, more than ``max_elements`` strings, or a shape of more than ``max_elements``
    elements that TensorFlow would fill by repeating fewer values (``tf.make_ndarray`` broadcasts).
    """
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    fields = _dtype_fields()
    if proto.dtype not in fields:
        dtype = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else str(proto.dtype)
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': dtype {dtype} is not supported")
    if proto.tensor_shape.unknown_rank:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': the tensor's shape must be known")
    dims = [d.size for d in proto.tensor_shape.dim]
    if len(dims) > _MAX_RANK:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': {len(dims)} dimensions (at most {_MAX_RANK})")
    if any(d < 0 for d in dims):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} has a negative dimension")
    count = math.prod(dims)
    field_name, itemsize = fields[proto.dtype]
    is_string = proto.dtype == types_pb2.DT_STRING
    if is_string and count > max_elements:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} declares {count} strings, over the "
                           f"limit of {max_elements} elements per input")
    if proto.tensor_content:
        if is_string:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': string tensors cannot use tensor_content")
        if len(proto.tensor_content) != count * itemsize:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': tensor_content holds {len(proto.tensor_content)} "
                               f"bytes, shape {dims} needs {count * itemsize}")
    else:
        values = len(getattr(proto, field_name))
        if values > count:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': {values} values for shape {dims} "
                               f"({count} elements)")
        if values < count and count > max_elements:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} declares {count} elements for "
                               f"{values} value(s), over the limit of {max_elements} elements per input")
    if any(d > _MAX_DIM for d in dims):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} has a dimension over {_MAX_DIM}")
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # whatever make_ndarray objects to is the request's fault
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' is not a valid TensorProto: "
                           f"{shorten(str(e), 120)}") from e


def _grpc_services(plane: DataPlane, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        status_pb2,
    )

    def locate(spec):
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        return spec.name, version, label

    def guard(method):
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except Exception as e:
                error = plane.as_serving_error(e, f"gRPC {method.__name__}")
                context.abort(grpc.StatusCode[error.code], error.message)
        wrapper.__name__ = method.__name__
        return wrapper

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guard
        def Predict(self, request, context):  # noqa: N802 (gRPC names)
            loaded = plane.resolve(*locate(request.model_spec))
            name = request.model_spec.signature_name or contract.SERVING_DEFAULT
            inputs = {key: tensor_proto_to_array(key, proto, max_input_elements) for key, proto in request.inputs.items()}
            outputs = plane.predict(loaded, name, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = plane.model_name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = name
            wanted = set(request.output_filter) or set(outputs)
            for key in wanted:
                if key not in outputs:
                    raise ServingError("INVALID_ARGUMENT", f"output_filter '{shorten(key, 60)}' is not an output of '{name}'")
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

        @guard
        def GetModelMetadata(self, request, context):  # noqa: N802
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError("INVALID_ARGUMENT", "Metadata field signature_def is the only one supported")
            loaded = plane.resolve(*locate(request.model_spec))
            sigs = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in loaded.signatures.items():
                definition = sigs.signature_def[name]
                definition.method_name = "tensorflow/serving/predict"
                for key, spec in sig.structured_input_signature[1].items():
                    _tensor_info(definition.inputs[key], spec)
                for key, spec in sig.structured_outputs.items():
                    _tensor_info(definition.outputs[key], spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = plane.model_name
            response.model_spec.version.value = loaded.version
            response.metadata["signature_def"].Pack(sigs)
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guard
        def GetModelStatus(self, request, context):  # noqa: N802
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in plane.status(*locate(request.model_spec)):
                status = response.model_version_status.add()
                status.version = entry["version"]
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
                code = STATUS_CODES["UNKNOWN" if entry["error"] else "OK"][0]
                status.status.CopyFrom(status_pb2.StatusProto(error_code=code, error_message=entry["error"]))
            return response

    def _tensor_info(info, spec):
        info.name = spec.name or ""
        info.dtype = spec.dtype.as_datatype_enum
        if spec.shape.rank is None:
            info.tensor_shape.unknown_rank = True
        else:
            for d in spec.shape.as_list():
                info.tensor_shape.dim.add(size=-1 if d is None else d)

    return PredictionService(), ModelService(), prediction_service_pb2_grpc, model_service_pb2_grpc


def grpc_server(store, port: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, threads: int = 16,
                host: str = DEFAULT_HOST, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS):
    """A started gRPC server on ``host:port`` (port 0: any free port; read ``server.port``).

    ``store``: a DataPlane, or a ModelStore (wrapped in one). Requests run on ``threads`` threads;
    gRPC's core multiplexes connections, so idle clients hold none.
    """
    import grpc

    plane = store if isinstance(store, DataPlane) else DataPlane(store)
    prediction, model, prediction_grpc, model_grpc = _grpc_services(plane, max_input_elements)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-worker"), options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", max_request_bytes),
    ])
    prediction_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_grpc.add_ModelServiceServicer_to_server(model, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.port = server.add_insecure_port(address)
    if not server.port:
        raise OSError(f"gRPC could not bind {address}")
    server.start()
    return server

