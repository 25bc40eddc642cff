"""TensorFlow Serving's REST API as a codec: JSON bodies <-> named numpy tensors. Pure.

What TF Serving's ``api_rest.md`` documents, for any model behind the data plane:

* ``:predict`` takes the row format (``instances``: one entry per example, each the value of the
  only input or an object of every input) or the columnar format (``inputs``: the value of the only
  input or an object of every input, the batch dimension included) and answers ``predictions``
  (per row: the value of the only output, or an object of every output) or ``outputs`` (the value
  of the only output, or an object of them). ``{"b64": "..."}`` carries binary string values both ways.
* metadata: ``model_spec`` and a ``serving_default`` ``signature_def`` built from the signature,
  whatever the framework; status: ``model_version_status`` with TF Serving's states.
* errors: ``{"error": "..."}`` (the transport gives the status from the error's class).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from backends.dtypes import is_bfloat16, v2_to_numpy
from backends.errors import InvalidRequest
from backends.signature import ModelSignature, TensorSpec
from deployments.protocol.limits import RequestLimits, check_body_size, check_elements, check_json_depth

__all__ = ["PredictRequest", "decode_predict", "encode_predict", "signature_def", "signature_defs", "signature_kind",
           "model_metadata",
           "version_status", "DEFAULT_SIGNATURE", "TF_DTYPES"]

DEFAULT_SIGNATURE = "serving_default"
TF_DTYPES = {"BOOL": "DT_BOOL", "UINT8": "DT_UINT8", "UINT16": "DT_UINT16", "UINT32": "DT_UINT32",
             "UINT64": "DT_UINT64", "INT8": "DT_INT8", "INT16": "DT_INT16", "INT32": "DT_INT32", "INT64": "DT_INT64",
             "FP16": "DT_HALF", "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "BYTES": "DT_STRING", "BF16": "DT_BFLOAT16"}
# Triton/our index states -> TF Serving's ModelVersionStatus.State
_STATES = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNAVAILABLE": "END", "UNLOADING": "UNLOADING"}


class PredictRequest:
    """A decoded ``:predict`` body: the inputs by name and which format answers it."""

    __slots__ = ("inputs", "row_format", "signature_name")

    def __init__(self, inputs: dict[str, np.ndarray], row_format: bool, signature_name: str) -> None:
        self.inputs, self.row_format, self.signature_name = inputs, row_format, signature_name


def _unb64(value: Any, name: str) -> Any:
    """Replace every ``{"b64": "..."}`` in a nested value by its bytes."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InvalidRequest(f"input {name!r}: an object value must be {{\"b64\": \"<base64 string>\"}}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"input {name!r}: b64 value is not valid base64: {exc}") from None
    if isinstance(value, list):
        return [_unb64(v, name) for v in value]
    return value


def _array(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    """A JSON value as the input's tensor, coerced to its type as TF Serving coerces it."""
    value = _unb64(value, name)
    dtype = v2_to_numpy(spec.datatype)
    try:
        if spec.datatype == "BYTES":
            array = np.array(value, dtype=object)
            flat = [v.encode() if isinstance(v, str) else v for v in array.ravel()]
            if not all(isinstance(v, bytes) for v in flat):
                raise InvalidRequest(f"input {name!r}: DT_STRING values must be strings or {{\"b64\": ...}}")
            out = np.empty(array.shape, dtype=object)
            out.ravel()[:] = flat
            return out
        array = np.array(value)
    except ValueError as exc:  # ragged nesting
        raise InvalidRequest(f"input {name!r}: the values do not form a tensor (ragged lists?): {exc}") from None
    if array.dtype == object or array.dtype.kind in "SU":
        raise InvalidRequest(f"input {name!r}: expects {TF_DTYPES[spec.datatype]} numbers, got {array.dtype.kind!r} "
                             f"values")
    if array.dtype.kind == "f" and dtype.kind in "iub":
        raise InvalidRequest(f"input {name!r}: expects {TF_DTYPES[spec.datatype]}, got a fractional number")
    try:
        return array.astype(dtype)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InvalidRequest(f"input {name!r}: values do not fit {TF_DTYPES[spec.datatype]}: {exc}") from None


def _rows(instances: list, signature: ModelSignature) -> dict[str, np.ndarray]:
    specs = {s.name: s for s in signature.inputs}
    if not instances:
        raise InvalidRequest("'instances' is empty: give at least one instance")
    named = all(isinstance(i, dict) and not set(i) <= {"b64"} for i in instances)
    if len(specs) > 1 and not named:
        raise InvalidRequest(f"each instance must be an object naming every input: {', '.join(specs)}")
    if not named:
        (name, spec), = specs.items()
        return {name: _array(name, instances, spec)}
    for index, instance in enumerate(instances):
        if set(instance) != set(specs):
            raise InvalidRequest(f"instances[{index}] has inputs {sorted(instance)}; the model takes {sorted(specs)}")
    return {name: _array(name, [i[name] for i in instances], spec) for name, spec in specs.items()}


def _columns(inputs: Any, signature: ModelSignature) -> dict[str, np.ndarray]:
    specs = {s.name: s for s in signature.inputs}
    if isinstance(inputs, dict) and set(inputs) - {"b64"}:
        unknown = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        if unknown or missing:
            raise InvalidRequest(f"'inputs' names {sorted(inputs)}; the model takes {sorted(specs)}")
        return {name: _array(name, value, specs[name]) for name, value in inputs.items()}
    if len(specs) > 1:
        raise InvalidRequest(f"'inputs' must be an object naming every input: {', '.join(specs)}")
    (name, spec), = specs.items()
    return {name: _array(name, inputs, spec)}


def decode_predict(body: bytes, signature: ModelSignature, limits: RequestLimits | None = None) -> PredictRequest:
    """Decode a ``:predict`` body against the model's signature.

    Raises:
        InvalidRequest: not JSON, both or neither of ``instances``/``inputs``, an unknown signature,
            or values that do not fit an input (the message names it).
    """
    limits = limits or RequestLimits()
    check_body_size(len(body), limits)
    check_json_depth(body, limits)
    try:
        document = orjson.loads(body)  # a C parser: a JSON image is 150k numbers
    except orjson.JSONDecodeError:
        try:  # Python's parser takes what orjson refuses and TF Serving accepts (NaN, Infinity)
            document = json.loads(body)
        except ValueError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object with 'instances' or 'inputs'")
    name = document.get("signature_name") or DEFAULT_SIGNATURE
    if name != DEFAULT_SIGNATURE:
        raise InvalidRequest(f"Serving signature name: \"{name}\" not found in signature def")
    if ("instances" in document) == ("inputs" in document):
        raise InvalidRequest("Missing 'inputs' or 'instances' key" if "instances" not in document
                             else "Not allowed to have both 'inputs' and 'instances' keys")
    if "instances" in document:
        if not isinstance(document["instances"], list):
            raise InvalidRequest("'instances' must be a list (one entry per example)")
        request = PredictRequest(_rows(document["instances"], signature), True, name)
    else:
        request = PredictRequest(_columns(document["inputs"], signature), False, name)
    check_elements({n: list(a.shape) for n, a in request.inputs.items()}, limits)
    return request


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        def text(v: Any) -> Any:
            raw = v if isinstance(v, bytes) else str(v).encode()
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(raw).decode()}
        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else array.tolist()
    if is_bfloat16(array.dtype):  # its scalars are not JSON numbers
        return array.astype(np.float32).tolist()
    return array.tolist()


def encode_predict(request: PredictRequest, outputs: dict[str, np.ndarray], order: Iterable[str]) -> bytes:
    """The ``:predict`` answer: ``predictions`` for the row format, ``outputs`` for the columnar."""
    names = [n for n in order if n in outputs] or list(outputs)
    if not request.row_format:
        value = _json_value(outputs[names[0]]) if len(names) == 1 else {n: _json_value(outputs[n]) for n in names}
        return json.dumps({"outputs": value}).encode()
    if len(names) == 1:
        return json.dumps({"predictions": _json_value(outputs[names[0]])}).encode()
    rows = {n: _json_value(outputs[n]) for n in names}
    count = min(len(v) for v in rows.values())
    return json.dumps({"predictions": [{n: rows[n][i] for n in names} for i in range(count)]}).encode()


def _tensor_info(spec: TensorSpec) -> dict:
    return {"dtype": TF_DTYPES.get(spec.datatype, "DT_INVALID"), "name": spec.name,
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False}}


def signature_kind(signature: ModelSignature) -> str:
    """"classify", "regress" or "predict": what TF Serving would call with it. Classify and regress
    take one DT_STRING ``inputs`` (serialized tf.Example) and answer ``classes``/``scores`` or ``outputs``."""
    spec = signature.input("inputs")
    outputs = {s.name for s in signature.outputs}
    if len(signature.inputs) != 1 or spec is None or spec.datatype != "BYTES" or not outputs:
        return "predict"
    if outputs <= {"classes", "scores"}:
        return "classify"
    return "regress" if outputs == {"outputs"} else "predict"


def signature_def(signature: ModelSignature, method: str = "predict") -> dict:
    """A SignatureDef in TF Serving's JSON, from any model's signature."""
    return {"inputs": {s.name: _tensor_info(s) for s in signature.inputs},
            "outputs": {s.name: _tensor_info(s) for s in signature.outputs},
            "method_name": f"tensorflow/serving/{method}"}


def signature_defs(signature: ModelSignature, others: dict[str, ModelSignature] | None = None) -> dict:
    """Every SignatureDef by name: ``serving_default`` (what :predict runs) and a SavedModel's others."""
    defs = {DEFAULT_SIGNATURE: signature_def(signature)}
    for name, other in sorted((others or {}).items()):
        defs[name] = signature_def(other, signature_kind(other))
    return defs


def model_metadata(name: str, version: str, signature: ModelSignature,
                   others: dict[str, ModelSignature] | None = None) -> dict:
    """``GET /v1/models/{m}[/versions/{v}]/metadata``."""
    return {"model_spec": {"name": name, "signature_name": "", "version": version},
            "metadata": {"signature_def": {"signature_def": signature_defs(signature, others)}}}


def version_status(rows: Iterable[tuple[str, str, str]]) -> dict:
    """``GET /v1/models/{m}``: (version, our state, reason) rows as ``model_version_status``, newest first."""
    statuses = []
    for version, state, reason in sorted(rows, key=lambda r: -int(r[0]) if r[0].isdigit() else 0):
        failed = state == "UNAVAILABLE" and reason and reason != "unloaded"
        statuses.append({"version": version, "state": _STATES.get(state, "END"),
                         "status": {"error_code": "UNKNOWN" if failed else "OK",
                                    "error_message": reason if failed else ""}})
    return {"model_version_status": statuses}
