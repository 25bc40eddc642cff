"""TF Serving's gRPC API as a codec: ``tensorflow.serving`` messages <-> named numpy tensors. Pure.

The messages are TF Serving's own (``tensorflow-serving-api``, loaded without TensorFlow by
``deployments.protocol.tfserving_apis``), so an unchanged TF Serving client (its
``PredictionServiceStub``, ``tf.make_tensor_proto`` tensors) talks to any model behind the data plane.

* ``TensorProto`` in: ``tensor_content`` (little-endian bytes) or the typed field of its dtype
  (``float_val``, ``int_val``, ``string_val``, ``half_val`` bit patterns...); fewer typed values than
  the shape holds are padded with the last one, none at all is zeros, as TensorFlow reads a proto.
  The dtype must be the signature's (TF Serving does not convert: a DT_DOUBLE for a float input is
  refused, naming both).
* ``TensorProto`` out: the typed field (``outputs["y"].float_val`` is how TF Serving clients read
  answers), every output or those in ``output_filter``.
* metadata: the ``serving_default`` SignatureDef of ``deployments.protocol.tfserving_rest`` as a
  ``SignatureDefMap`` in ``metadata["signature_def"]``; status: its ``model_version_status`` rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format

from backends.dtypes import numpy_to_v2, v2_to_numpy
from backends.errors import InvalidRequest
from backends.signature import ModelSignature
from deployments.protocol.limits import RequestLimits, check_body_size, check_elements
from deployments.protocol.tfserving_apis import tf_serving_apis
from deployments.protocol.tfserving_rest import DEFAULT_SIGNATURE, TF_DTYPES, signature_defs

__all__ = ["tensor_to_array", "array_to_tensor", "decode_predict_request", "encode_predict_response",
           "metadata_response", "status_response", "signature_name", "spec_version"]

apis = tf_serving_apis()
_DT = apis.types_pb2.DataType
_TF_TO_V2 = {tf_name: v2 for v2, tf_name in TF_DTYPES.items()}
# The TensorProto field that carries each datatype's values (tensorflow/core/framework/tensor.proto).
_TYPED_FIELD = {"FP32": "float_val", "FP64": "double_val", "INT32": "int_val", "INT16": "int_val",
                "UINT16": "int_val", "INT8": "int_val", "UINT8": "int_val", "INT64": "int64_val", "BOOL": "bool_val",
                "UINT32": "uint32_val", "UINT64": "uint64_val", "BYTES": "string_val", "FP16": "half_val",
                "BF16": "half_val"}
_HALF = ("FP16", "BF16")  # half_val holds their 16-bit patterns as int32


def _dtype_name(value: int) -> str:
    try:
        return _DT.Name(value)
    except ValueError:
        return f"dtype {value}"


def _shape(name: str, proto: Any) -> list[int]:
    if proto.tensor_shape.unknown_rank:
        raise InvalidRequest(f"input {name!r}: tensor_shape.unknown_rank: a request tensor needs its shape")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise InvalidRequest(f"input {name!r}: tensor_shape {shape} has a negative dimension")
    return shape


def tensor_to_array(name: str, proto: Any, datatype: str | None = None) -> np.ndarray:
    """A ``TensorProto`` as an array; ``datatype`` (v2 spelling): the one the input expects.

    Raises:
        InvalidRequest: a dtype other than the expected one or none we serve, a shape the values
            do not fill, bytes in ``tensor_content`` for strings.
    """
    given = _TF_TO_V2.get(_dtype_name(proto.dtype))
    if given is None:
        raise InvalidRequest(f"input {name!r}: unsupported dtype {_dtype_name(proto.dtype)}")
    if datatype is not None and given != datatype:
        raise InvalidRequest(f"input {name!r}: expects {TF_DTYPES[datatype]}, but {_dtype_name(proto.dtype)} "
                             f"is provided")
    shape = _shape(name, proto)
    count = int(np.prod(shape)) if shape else 1
    if proto.tensor_content:
        if given == "BYTES":
            raise InvalidRequest(f"input {name!r}: DT_STRING values go in string_val, not tensor_content")
        dtype = v2_to_numpy(given).newbyteorder("<")
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise InvalidRequest(f"input {name!r}: tensor_shape {shape} needs {count * dtype.itemsize} bytes of "
                                 f"tensor_content, got {len(proto.tensor_content)}")
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    values = getattr(proto, _TYPED_FIELD[given])
    if len(values) > count:
        raise InvalidRequest(f"input {name!r}: tensor_shape {shape} holds {count} values, "
                             f"{_TYPED_FIELD[given]} has {len(values)}")
    if given == "BYTES":
        array = np.empty(count, dtype=object)
        if count:
            array[:] = list(values) + [values[-1] if values else b""] * (count - len(values))
        return array.reshape(shape)
    try:
        if given in _HALF:
            typed = np.asarray(values, dtype=np.int32).astype(np.uint16).view(v2_to_numpy(given))
        else:
            typed = np.asarray(values, dtype=v2_to_numpy(given))
    except (OverflowError, ValueError) as exc:
        raise InvalidRequest(f"input {name!r}: {_TYPED_FIELD[given]} values do not fit {TF_DTYPES[given]}: "
                             f"{exc}") from None
    if len(typed) == count:
        return typed.reshape(shape)
    if not len(typed):
        return np.zeros(shape, dtype=v2_to_numpy(given))
    return np.concatenate([typed, np.repeat(typed[-1:], count - len(typed))]).reshape(shape)


def array_to_tensor(array: np.ndarray) -> Any:
    """An output as a ``TensorProto``, its values in the dtype's typed field."""
    datatype = numpy_to_v2(array.dtype)
    proto = apis.tensor_pb2.TensorProto(dtype=_DT.Value(TF_DTYPES[datatype]))
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    field = getattr(proto, _TYPED_FIELD[datatype])
    flat = array.ravel()
    if datatype == "BYTES":
        field.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif datatype in _HALF:
        field.extend(flat.view(np.uint16).astype(np.int32).tolist())
    else:
        field.extend(flat.tolist())
    return proto


def signature_name(spec: Any) -> str:
    """The signature a ``model_spec`` asks for; only ``serving_default`` (or none) is served."""
    name = spec.signature_name or DEFAULT_SIGNATURE
    if name != DEFAULT_SIGNATURE:
        raise InvalidRequest(f"Serving signature name: \"{name}\" not found in signature def")
    return name


def spec_version(spec: Any) -> str | None:
    """``model_spec``'s version (a number as text), its ``version_label``, or None for the latest."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return str(spec.version.value)
    if choice == "version_label":
        return spec.version_label or None
    return None


def decode_predict_request(request: Any, signature: ModelSignature,
                           limits: RequestLimits | None = None) -> dict[str, np.ndarray]:
    """A ``PredictRequest``'s inputs, checked against the signature (names and dtypes; shapes are the
    data plane's).

    Raises:
        InvalidRequest: an input the signature lacks or one it needs missing, a dtype mismatch.
        PayloadTooLarge: the message or a tensor over the model's limits.
    """
    limits = limits or RequestLimits()
    check_body_size(request.ByteSize(), limits)
    signature_name(request.model_spec)
    specs = {s.name: s for s in signature.inputs}
    unknown = sorted(set(request.inputs) - set(specs))
    if unknown:
        raise InvalidRequest(f"input tensor alias not found in signature: {unknown[0]}. Inputs expected to be in "
                             f"the set {{{','.join(specs)}}}.")
    missing = sorted(set(specs) - set(request.inputs))
    if missing:
        raise InvalidRequest(f"Request inputs do not match required inputs for model: missing {missing}")
    check_elements({n: [d.size for d in t.tensor_shape.dim] for n, t in request.inputs.items()}, limits)
    return {name: tensor_to_array(name, tensor, specs[name].datatype) for name, tensor in request.inputs.items()}


def _fill_spec(target: Any, name: str, version: int | None) -> None:
    target.name, target.signature_name = name, DEFAULT_SIGNATURE
    if version is not None:
        target.version.value = version


def encode_predict_response(name: str, version: int, outputs: dict[str, np.ndarray], output_filter: list[str],
                            order: list[str]) -> Any:
    """The ``PredictResponse``: ``output_filter``'s outputs (empty: all, in the signature's order)."""
    unknown = [o for o in output_filter if o not in outputs]
    if unknown:
        raise InvalidRequest(f"output tensor alias not found in signature: {unknown[0]}. Outputs expected to be "
                             f"in the set {{{','.join(outputs)}}}.")
    names = list(output_filter) or [n for n in order if n in outputs] or list(outputs)
    response = apis.predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, name, version)
    for output in names:
        response.outputs[output].CopyFrom(array_to_tensor(outputs[output]))
    return response


def metadata_response(request: Any, name: str, version: int, signature: ModelSignature,
                      others: dict[str, ModelSignature] | None = None) -> Any:
    """``GetModelMetadataResponse`` with ``metadata["signature_def"]``, the one field TF Serving serves."""
    fields = list(request.metadata_field)
    if not fields:
        raise InvalidRequest("GetModelMetadataRequest must specify at least one metadata_field")
    if fields != ["signature_def"]:
        raise InvalidRequest(f"Metadata field {next(f for f in fields if f != 'signature_def')} is not supported")
    signatures = json_format.ParseDict({"signature_def": signature_defs(signature, others)},
                                       apis.get_model_metadata_pb2.SignatureDefMap())
    response = apis.get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, name, version)
    response.model_spec.signature_name = ""
    response.metadata["signature_def"].Pack(signatures)
    return response


def status_response(status: dict) -> Any:
    """``GetModelStatusResponse`` from the REST document (``tfserving_rest.version_status``): TF Serving's
    REST status is that message's JSON mapping."""
    return json_format.ParseDict(status, apis.get_model_status_pb2.GetModelStatusResponse())
