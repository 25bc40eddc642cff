"""TF Serving's classify/regress codec: tf.Example features from JSON (and context), from the gRPC Input,
the signature check, and the results in TF Serving's REST and gRPC shapes."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from backends.errors import InvalidRequest
from backends.signature import ModelSignature, TensorSpec
from deployments.protocol.tfserving_apis import tf_serving_apis
from deployments.protocol.tfserving_examples import (
    check_signature,
    classify_response,
    classify_result,
    encode_result_json,
    examples_from_input,
    examples_from_json,
    regress_result,
)

apis = tf_serving_apis()
CLASSIFY = ModelSignature(inputs=(TensorSpec("inputs", "BYTES", (-1,)),),
                          outputs=(TensorSpec("classes", "BYTES", (-1, 2)), TensorSpec("scores", "FP32", (-1, 2))))


def parsed(serialized: bytes) -> dict:
    example = apis.example_pb2.Example.FromString(serialized)
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value)
    return out


def test_json_examples_become_tf_examples_with_the_context_under_each() -> None:
    body = orjson.dumps({"signature_name": "classify", "context": {"country": "fr", "age": 1},
                         "examples": [{"age": 30, "income": [1.5, 2]}, {"tag": {"b64": "AAE="}}]})
    name, examples = examples_from_json(body)
    assert name == "classify" and examples.shape == (2,)
    first, second = (parsed(e) for e in examples)
    assert first == {"country": [b"fr"], "age": [30], "income": [1.5, 2.0]}  # the example's own age wins
    assert second == {"country": [b"fr"], "age": [1], "tag": [b"\x00\x01"]}


@pytest.mark.parametrize(("body", "message"), [
    (b"[]", "an 'examples' list"),
    (b'{"examples": []}', "'examples' is empty"),
    (b'{"examples": [{"x": [[1, 2]]}]}', "feature 'x': a value is a scalar or a flat list"),
    (b'{"examples": [{"x": [1, "a"]}]}', "feature 'x': values must be all numbers or all strings"),
    (b'{"examples": [3]}', r"examples\[0\] must be an object"),
])
def test_bad_example_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        examples_from_json(body)


def test_grpc_input_with_context_lets_the_example_win() -> None:
    request = apis.classification_pb2.ClassificationRequest()
    listed = request.input.example_list_with_context
    listed.context.features.feature["a"].int64_list.value.append(1)
    listed.context.features.feature["b"].int64_list.value.append(2)
    listed.examples.add().features.feature["a"].int64_list.value.append(9)
    (serialized,) = examples_from_input(request.input)
    assert parsed(serialized) == {"a": [9], "b": [2]}
    with pytest.raises(InvalidRequest, match="example_list"):
        examples_from_input(apis.classification_pb2.ClassificationRequest().input)


def test_signatures_are_checked_and_results_shaped_as_tf_serving_shapes_them() -> None:
    check_signature("classify", "classify", CLASSIFY)
    with pytest.raises(InvalidRequest, match="not a regress signature"):
        check_signature("regress", "classify", CLASSIFY)
    outputs = {"classes": np.array([[b"no", b"yes"]] * 2, dtype=object),
               "scores": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)}
    result = classify_result(outputs, 2)
    assert result == [[("no", 0.25), ("yes", 0.75)], [("no", 0.5), ("yes", 0.5)]]
    assert orjson.loads(encode_result_json(result)) == {"result": [[["no", 0.25], ["yes", 0.75]],
                                                                   [["no", 0.5], ["yes", 0.5]]]}
    assert classify_result({"scores": outputs["scores"]}, 2)[0] == [("", 0.25), ("", 0.75)]
    response = classify_response("m", 3, "classify", result)
    assert response.model_spec.version.value == 3 and response.result.classifications[0].classes[1].label == "yes"
    assert regress_result({"outputs": np.array([[1.5], [2.5]], np.float32)}, 2) == [1.5, 2.5]
    assert orjson.loads(encode_result_json([1.5, 2.5])) == {"result": [1.5, 2.5]}
    with pytest.raises(InvalidRequest, match="one each expected"):
        regress_result({"outputs": np.zeros((2, 2), np.float32)}, 2)
