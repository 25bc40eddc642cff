"""KServe v2 over gRPC: Triton's ``inference.GRPCInferenceService`` messages <-> numpy. Pure: no Ray.

The messages are Triton's own (``tritonclient.grpc.service_pb2``, generated from Triton's
``grpc_service.proto``), so an unchanged ``tritonclient.grpc`` client talks to infergrid.
Inputs come typed (``InferTensorContents``) or raw (``raw_input_contents``, one blob per input,
in Triton's binary tensor layout); outputs always go back raw, as Triton sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb

from backends.dtypes import V2_DATATYPES, numpy_to_v2, v2_to_numpy
from backends.errors import InputMismatch, InvalidRequest
from backends.signature import ModelSignature
from deployments.protocol.classification import classify_outputs, requested_count
from deployments.protocol.limits import RequestLimits, check_body_size, check_elements
from deployments.protocol.tensors import array_from_binary, array_to_binary

__all__ = ["GrpcInferRequest", "decode_grpc_infer", "encode_grpc_infer", "grpc_model_metadata", "pb",
           "parameter_values", "statistics_message", "GRPC_CODES"]

# The InferTensorContents field that carries each datatype's values.
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}

# HTTP status of a ServingError -> gRPC status code name (grpc.StatusCode member), as Triton maps them.
GRPC_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              405: "UNIMPLEMENTED", 409: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 429: "UNAVAILABLE",
              500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class GrpcInferRequest:
    """A decoded ``ModelInferRequest``: inputs by name, the outputs asked for (None: all), its id and parameters."""

    __slots__ = ("model", "version", "id", "inputs", "outputs", "parameters", "classification")

    def __init__(self, model: str, version: str, request_id: str, inputs: dict[str, np.ndarray],
                 outputs: list[str] | None, parameters: dict[str, Any],
                 classification: dict[str, int] | None = None) -> None:
        self.model, self.version, self.id = model, version, request_id
        self.inputs, self.outputs, self.parameters = inputs, outputs, parameters
        self.classification = classification or {}  # output -> class count (Triton's classification)


def parameter_values(parameters: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain values."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, kind) if kind else None
    return out


def _typed(name: str, datatype: str, shape: list[int], contents: Any) -> np.ndarray:
    field = _CONTENTS.get(datatype)
    if field is None:  # FP16 / BF16 have no typed field in the proto: raw only
        raise InvalidRequest(f"input {name!r}: {datatype} data must come in raw_input_contents")
    values = list(getattr(contents, field))
    count = int(np.prod(shape)) if shape else 1
    if len(values) != count:
        raise InputMismatch(f"input {name!r}: shape {shape} needs {count} elements, contents has {len(values)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    try:
        return np.asarray(values, dtype=v2_to_numpy(datatype)).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise InputMismatch(f"input {name!r}: values do not fit {datatype}: {exc}") from None


def decode_grpc_infer(request: Any, limits: RequestLimits) -> GrpcInferRequest:
    """Decode a ``ModelInferRequest`` (limits first: message size, then element counts).

    Raises:
        PayloadTooLarge: the message or a tensor is over a limit.
        InvalidRequest / InputMismatch: a missing field, a bad datatype, data not matching its shape.
    """
    check_body_size(request.ByteSize(), limits)
    if not request.inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    check_elements({tensor.name: list(tensor.shape) for tensor in request.inputs}, limits)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if not name:
            raise InvalidRequest(f"inputs[{index}].name is missing")
        if datatype not in V2_DATATYPES:
            raise InputMismatch(f"input {name!r}: unknown datatype {datatype!r}; "
                                f"expected one of {', '.join(V2_DATATYPES)}")
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        inputs[name] = array_from_binary(name, datatype, shape, raw[index]) if raw \
            else _typed(name, datatype, shape, tensor.contents)
    outputs = [o.name for o in request.outputs] or None
    counts = {o.name: requested_count(o.name, parameter_values(o.parameters)["classification"])
              for o in request.outputs if "classification" in o.parameters}
    return GrpcInferRequest(request.model_name, request.model_version, request.id, inputs, outputs,
                            parameter_values(request.parameters), counts)


def encode_grpc_infer(request: GrpcInferRequest, version: str, outputs: dict[str, np.ndarray],
                      labels: Mapping[str, Sequence[str]] | None = None, triton_config: Mapping | None = None) -> Any:
    """The ``ModelInferResponse`` of ``outputs`` (those the request named, else all), raw contents;
    ``classification`` outputs as their top classes (see ``encode_infer_response``)."""
    names = request.outputs if request.outputs is not None else list(outputs)
    missing = [name for name in names if name not in outputs]
    if missing:
        raise InputMismatch(f"unknown output {missing[0]!r}; the model returns {', '.join(outputs)}")
    outputs = classify_outputs(outputs, request.classification, labels or {}, triton_config or {})
    response = pb.ModelInferResponse(model_name=request.model, model_version=version, id=request.id)
    for name in names:
        array = outputs[name]
        response.outputs.add(name=name, datatype=numpy_to_v2(array.dtype), shape=list(array.shape))
        response.raw_output_contents.append(array_to_binary(array))
    return response


def grpc_model_metadata(name: str, versions: list[str], platform: str, signature: ModelSignature) -> Any:
    """``ModelMetadataResponse``: the same facts as ``GET /v2/models/{m}``."""
    response = pb.ModelMetadataResponse(name=name, versions=versions, platform=platform)
    for spec in signature.inputs:
        response.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
    for spec in signature.outputs:
        response.outputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
    return response


def statistics_message(statistics: dict) -> Any:
    """Triton's statistics extension (the JSON of ``/v2/models/stats``) as a ``ModelStatisticsResponse``."""
    return json_format.ParseDict(statistics, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)
