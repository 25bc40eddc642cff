"""KServe v2 / Open Inference Protocol over HTTP: infer requests in, responses out. Pure: no Ray.

Supports JSON tensors of every v2 datatype (nested or flat ``data``), Triton's binary tensor data
extension (``Inference-Header-Content-Length``), the ``outputs`` filter and ``id`` echo.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from backends.dtypes import V2_DATATYPES, numpy_to_v2
from backends.errors import InputMismatch, InvalidRequest
from backends.signature import ModelSignature
from deployments.protocol.classification import classify_outputs, requested_count
from deployments.protocol.limits import RequestLimits, check_body_size, check_elements, check_json_depth
from deployments.protocol.tensors import array_from_binary, array_from_json, array_to_binary, array_to_json

__all__ = ["InferRequest", "decode_infer_request", "validate_inputs", "encode_infer_response",
           "HEADER_LENGTH", "model_metadata"]

HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of the request's ``outputs``: a name, whether it comes back as binary, and its
    ``classification`` count (0: the tensor itself)."""

    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: named input arrays plus what to send back."""

    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...] | None = None
    id: str | None = None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def _parse_header(body: bytes, header_length: int | None, limits: RequestLimits) -> tuple[dict, memoryview]:
    view = memoryview(body)
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes")
        header_bytes, rest = view[:header_length], view[header_length:]
    else:
        header_bytes, rest = view, view[len(view):]
    raw = bytes(header_bytes)
    check_json_depth(raw, limits)
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # orjson refuses NaN and Infinity, which Python's json (and its clients) write
            header = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise InvalidRequest("request body must be a JSON object with an 'inputs' list")
    return header, rest


def _decode_input(entry: Any, index: int, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{index}].name is missing")
    for key in ("shape", "datatype"):
        if key not in entry:
            raise InvalidRequest(f"input {name!r}: '{key}' is missing")
    datatype = entry["datatype"]
    if datatype not in V2_DATATYPES:
        raise InputMismatch(f"input {name!r}: unknown datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}")
    params = entry.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidRequest(f"input {name!r}: binary_data_size {size!r} exceeds the binary part of the body")
        return name, array_from_binary(name, datatype, entry["shape"], binary[offset:offset + size]), offset + size
    if "data" not in entry:
        raise InvalidRequest(f"input {name!r}: 'data' is missing (or give parameters.binary_data_size)")
    return name, array_from_json(name, datatype, entry["shape"], entry["data"]), offset


def _requested_outputs(header: dict) -> tuple[RequestedOutput, ...] | None:
    outputs = header.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidRequest("'outputs' must be a list of {\"name\": ...} objects")
    requested = []
    for index, entry in enumerate(outputs):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidRequest(f"outputs[{index}].name is missing")
        params = entry.get("parameters") or {}
        count = requested_count(entry["name"], params["classification"]) if "classification" in params else 0
        requested.append(RequestedOutput(entry["name"], bool(params.get("binary_data", False)), count))
    return tuple(requested)


def decode_infer_request(body: bytes, header_length: int | None = None,
                         limits: RequestLimits | None = None) -> InferRequest:
    """Decode the body of ``POST .../infer``.

    Args:
        body: the raw HTTP body.
        header_length: the ``Inference-Header-Content-Length`` header, when present (binary form).
        limits: size limits (``deployments.protocol.limits``), checked before anything is decoded.

    Raises:
        PayloadTooLarge: over a size limit (413); the message names it.
        InvalidRequest: malformed JSON, too deeply nested, or a missing field; the message names it.
        InputMismatch: a tensor's data does not match its shape or datatype.
    """
    limits = limits or RequestLimits()
    check_body_size(len(body), limits)
    header, binary = _parse_header(body, header_length, limits)
    inputs_json = header.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise InvalidRequest("'inputs' must be a non-empty list")
    check_elements({str(e.get("name")): e.get("shape") for e in inputs_json if isinstance(e, dict)}, limits)
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, entry in enumerate(inputs_json):
        name, array, offset = _decode_input(entry, index, binary, offset)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        inputs[name] = array
    request_id = header.get("id")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be an object")
    return InferRequest(
        inputs=inputs,
        outputs=_requested_outputs(header),
        id=str(request_id) if request_id is not None else None,
        binary_output=bool(params.get("binary_data_output", False)),
        parameters=params,
    )


def validate_inputs(inputs: dict[str, np.ndarray], signature: ModelSignature, max_batch_size: int) -> int:
    """Check inputs against the model's signature before they join a batch.

    Returns:
        The number of rows the request carries (1 when the model does not batch).

    Raises:
        InputMismatch: an unknown, missing or mis-shaped input; the message names it.
    """
    for name in inputs:
        if signature.input(name) is None:
            expected = ", ".join(s.name for s in signature.inputs)
            raise InputMismatch(f"unknown input {name!r}; the model takes {expected}")
    rows: int | None = None
    for spec in signature.inputs:
        array = inputs.get(spec.name)
        if array is None:
            raise InputMismatch(f"input {spec.name!r} is missing")
        got = numpy_to_v2(array.dtype)
        if got != spec.datatype:
            raise InputMismatch(f"input {spec.name!r}: datatype {got} does not match the model's {spec.datatype}")
        if len(array.shape) != len(spec.shape) or any(
                want != -1 and want != have for want, have in zip(spec.shape, array.shape)):
            raise InputMismatch(f"input {spec.name!r}: shape {list(array.shape)} does not match the model's "
                                f"{list(spec.shape)}")
        if max_batch_size > 0:
            if rows is not None and array.shape[0] != rows:
                raise InputMismatch(f"input {spec.name!r}: batch size {array.shape[0]} differs from other inputs ({rows})")
            rows = array.shape[0]
    if max_batch_size > 0:
        if not rows:
            raise InputMismatch("the batch dimension must be at least 1")
        if rows > max_batch_size:
            raise InputMismatch(f"batch of {rows} rows exceeds the model's max_batch_size {max_batch_size}")
    return rows or 1


def _select_outputs(request: InferRequest, outputs: dict[str, np.ndarray]) -> list[tuple[str, bool]]:
    if request.outputs is None:
        return [(name, request.binary_output) for name in outputs]
    missing = [o.name for o in request.outputs if o.name not in outputs]
    if missing:
        raise InputMismatch(f"unknown output {missing[0]!r}; the model returns {', '.join(outputs)}")
    return [(o.name, o.binary or request.binary_output) for o in request.outputs]


def encode_infer_response(request: InferRequest, model_name: str, model_version: str,
                          outputs: dict[str, np.ndarray], labels: Mapping[str, Sequence[str]] | None = None,
                          triton_config: Mapping | None = None) -> tuple[bytes, int | None]:
    """Encode the response body; outputs asked for with ``classification`` become their top classes
    (``labels`` per output, batch dimension per ``triton_config``).

    Returns:
        The body and, when any output is binary, the JSON header's length (for the
        ``Inference-Header-Content-Length`` response header); otherwise None.
    """
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    blobs: list[bytes] = []
    entries = []
    selected = _select_outputs(request, outputs)
    counts = {o.name: o.classification for o in request.outputs or () if o.classification}
    outputs = classify_outputs(outputs, counts, labels or {}, triton_config or {})
    for name, binary in selected:
        array = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": numpy_to_v2(array.dtype), "shape": list(array.shape)}
        if binary:
            blob = array_to_binary(array)
            blobs.append(blob)
            entry["parameters"] = {"binary_data_size": len(blob)}
        else:
            entry["data"] = array_to_json(array)
        entries.append(entry)
    response["outputs"] = entries
    header = orjson.dumps(response)
    if b"null" in header:  # orjson writes NaN and Infinity as null; Python's json keeps them, as Triton does
        header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def model_metadata(name: str, versions: list[str], platform: str, signature: ModelSignature) -> dict:
    """The body of ``GET /v2/models/{m}[/versions/{v}]``."""
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [s.to_metadata() for s in signature.inputs],
        "outputs": [s.to_metadata() for s in signature.outputs],
    }
