"""TF Serving's Classify and Regress as a codec: ``tf.Example`` in (REST JSON or the gRPC ``Input``),
classes and scores or values out. Pure: protobuf and numpy.

A SavedModel's classification or regression signature takes one DT_STRING tensor, ``inputs``, of
serialized ``tf.Example`` protos (one per example) and answers ``classes`` (DT_STRING) and/or
``scores`` (DT_FLOAT), each ``[examples, classes]``, or ``outputs`` (DT_FLOAT, ``[examples]`` or
``[examples, 1]``). These are the names ``tf.compat.v1.saved_model.classification_signature_def`` and
``regression_signature_def`` give, and the ones TF Serving requires.

* REST (``api_rest.md``): ``{"signature_name", "context", "examples": [{feature: value | [values]}]}``;
  a feature's values are ints (``int64_list``), numbers (``float_list``; ints among them too) or
  strings / ``{"b64": ...}`` (``bytes_list``); ``context`` features go into every example (the
  example's own win). Answers ``{"result": [[[label, score], ...], ...]}`` and ``{"result": [v, ...]}``.
* gRPC: ``ClassificationRequest`` / ``RegressionRequest`` with ``input.example_list`` or
  ``input.example_list_with_context``; answers ``ClassificationResult`` / ``RegressionResult``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from backends.errors import InvalidRequest
from backends.signature import ModelSignature
from deployments.protocol.limits import RequestLimits, check_body_size, check_json_depth
from deployments.protocol.tfserving_apis import tf_serving_apis
from deployments.protocol.tfserving_rest import signature_kind

__all__ = ["EXAMPLES_INPUT", "check_signature", "examples_from_json", "examples_from_input", "classify_result",
           "regress_result", "encode_result_json", "classify_response", "regress_response"]

apis = tf_serving_apis()
EXAMPLES_INPUT = "inputs"


def check_signature(kind: str, name: str, signature: ModelSignature) -> None:
    """``signature`` can answer ``kind`` ("classify" or "regress") as TF Serving requires.

    Raises:
        InvalidRequest: another kind of signature (names what it has).
    """
    if signature_kind(signature) != kind:
        wanted = "['classes', 'scores']" if kind == "classify" else "['outputs']"
        raise InvalidRequest(f"signature {name!r} is not a {kind} signature: {kind} takes one DT_STRING input "
                             f"{EXAMPLES_INPUT!r} (serialized tf.Example) and answers {wanted}; this one takes "
                             f"{[s.name for s in signature.inputs]} and answers {[s.name for s in signature.outputs]}")


def _values(feature: str, value: Any) -> tuple[str, list]:
    """A JSON feature value as (the Feature's list field, its values)."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(v, list) for v in items):
        raise InvalidRequest(f"feature {feature!r}: a value is a scalar or a flat list, not a nested list")
    if not items:
        return "float_list", []
    if all(isinstance(v, bool) or isinstance(v, int) for v in items):
        return "int64_list", [int(v) for v in items]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return "float_list", [float(v) for v in items]
    raw = []
    for v in items:
        if isinstance(v, str):
            raw.append(v.encode())
        elif isinstance(v, dict) and set(v) == {"b64"} and isinstance(v["b64"], str):
            try:
                raw.append(base64.b64decode(v["b64"], validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidRequest(f"feature {feature!r}: b64 value is not valid base64: {exc}") from None
        else:
            raise InvalidRequest(f"feature {feature!r}: values must be all numbers or all strings "
                                 f"(or {{\"b64\": ...}}), got {v!r}")
    return "bytes_list", raw


def _example(features: dict, where: str) -> Any:
    if not isinstance(features, dict):
        raise InvalidRequest(f"{where} must be an object of features")
    example = apis.example_pb2.Example()
    for name, value in features.items():
        field, values = _values(name, value)
        getattr(example.features.feature[name], field).value.extend(values)
    return example


def examples_from_json(body: bytes, limits: RequestLimits | None = None) -> tuple[str, np.ndarray]:
    """A ``:classify`` / ``:regress`` body: (its signature name, the serialized examples).

    Raises:
        InvalidRequest: not JSON, no ``examples`` list, a feature that is not a scalar or flat list of
            one kind (the message names it).
    """
    limits = limits or RequestLimits()
    check_body_size(len(body), limits)
    check_json_depth(body, limits)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("examples"), list):
        raise InvalidRequest("the body must be a JSON object with an 'examples' list")
    context = document.get("context") or {}
    base = _example(context, "'context'") if context else None
    serialized = []
    for index, features in enumerate(document["examples"]):
        example = _example(features, f"examples[{index}]")
        if base is not None:  # context first: the example's own features win
            merged = apis.example_pb2.Example()
            merged.CopyFrom(base)
            merged.MergeFrom(example)
            for name in example.features.feature:
                merged.features.feature[name].CopyFrom(example.features.feature[name])
            example = merged
        serialized.append(example.SerializeToString())
    if not serialized:
        raise InvalidRequest("'examples' is empty: give at least one example")
    return document.get("signature_name") or "serving_default", _object_array(serialized)


def examples_from_input(proto: Any) -> np.ndarray:
    """The serialized examples of a gRPC ``Input`` (``example_list`` or ``example_list_with_context``).

    Raises:
        InvalidRequest: no examples.
    """
    kind = proto.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in proto.example_list.examples]
    elif kind == "example_list_with_context":
        listed = proto.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]  # later map entries win
    else:
        raise InvalidRequest("input: set example_list or example_list_with_context")
    if not serialized:
        raise InvalidRequest("input: no examples")
    return _object_array(serialized)


def _object_array(values: list[bytes]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def classify_result(outputs: dict[str, np.ndarray], examples: int) -> list[list[tuple[str, float]]]:
    """Per example its (label, score) pairs: labels from ``classes`` ("" without), scores from
    ``scores`` (0.0 without), as TF Serving fills them."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    shape = (classes if classes is not None else scores).reshape(examples, -1).shape
    classes = classes.reshape(shape) if classes is not None else np.full(shape, "", dtype=object)
    scores = scores.reshape(shape) if scores is not None else np.zeros(shape, dtype=np.float32)
    return [[(_text(c), float(s)) for c, s in zip(row_c, row_s)] for row_c, row_s in zip(classes, scores)]


def regress_result(outputs: dict[str, np.ndarray], examples: int) -> list[float]:
    """Per example its value (``outputs`` of ``[examples]`` or ``[examples, 1]``).

    Raises:
        InvalidRequest: more than one value per example.
    """
    values = np.asarray(outputs["outputs"])
    if values.size != examples:
        raise InvalidRequest(f"regress: the signature's 'outputs' has {values.size} values for {examples} examples "
                             f"(one each expected)")
    return [float(v) for v in values.ravel()]


def encode_result_json(result: list) -> bytes:
    """``{"result": ...}``, TF Serving's REST answer to both."""
    return orjson.dumps({"result": [[list(pair) for pair in row] for row in result]
                         if result and isinstance(result[0], list) else result})


def _spec(target: Any, name: str, version: int, signature_name: str) -> None:
    target.name, target.signature_name = name, signature_name
    target.version.value = version


def classify_response(name: str, version: int, signature_name: str, result: list) -> Any:
    """A ``ClassificationResponse``."""
    response = apis.classification_pb2.ClassificationResponse()
    _spec(response.model_spec, name, version, signature_name)
    for row in result:
        classification = response.result.classifications.add()
        for label, score in row:
            classification.classes.add(label=label, score=score)
    return response


def regress_response(name: str, version: int, signature_name: str, result: list[float]) -> Any:
    """A ``RegressionResponse``."""
    response = apis.regression_pb2.RegressionResponse()
    _spec(response.model_spec, name, version, signature_name)
    for value in result:
        response.result.regressions.add(value=value)
    return response
