"""TF Serving's REST codec: row and columnar ``:predict`` bodies, b64, answers and errors as TF Serving's."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from backends.errors import InvalidRequest
from backends.signature import ModelSignature, TensorSpec
from deployments.protocol.tfserving_rest import decode_predict, encode_predict, model_metadata, version_status

ONE = ModelSignature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 1)),))
TWO = ModelSignature((TensorSpec("a", "INT64", (-1, 2)), TensorSpec("s", "BYTES", (-1,))),
                     (TensorSpec("p", "FP32", (-1, 1)), TensorSpec("label", "BYTES", (-1,))))


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_row_format_stacks_instances_and_answers_predictions() -> None:
    request = decode_predict(body({"instances": [[1, 2, 3], [4, 5, 6]]}), ONE)
    assert request.row_format and request.inputs["x"].dtype == np.float32 and request.inputs["x"].shape == (2, 3)
    named = decode_predict(body({"instances": [{"x": [1, 2, 3]}]}), ONE)  # the only input, by name
    assert named.inputs["x"].shape == (1, 3)
    answer = json.loads(encode_predict(request, {"y": np.array([[0.5], [1.5]], np.float32)}, ["y"]))
    assert answer == {"predictions": [[0.5], [1.5]]}


def test_several_inputs_and_outputs_are_objects_per_row() -> None:
    request = decode_predict(body({"instances": [{"a": [1, 2], "s": "hi"}, {"a": [3, 4], "s": {"b64": "AAE="}}]}), TWO)
    assert request.inputs["a"].dtype == np.int64 and request.inputs["s"].tolist() == [b"hi", b"\x00\x01"]
    outputs = {"p": np.array([[0.25], [0.75]], np.float32), "label": np.array([b"ok", b"\xff"], dtype=object)}
    answer = json.loads(encode_predict(request, outputs, ["p", "label"]))
    assert answer == {"predictions": [{"p": [0.25], "label": "ok"},
                                      {"p": [0.75], "label": {"b64": base64.b64encode(b"\xff").decode()}}]}


def test_columnar_format_answers_outputs() -> None:
    request = decode_predict(body({"inputs": [[1, 2, 3]]}), ONE)
    assert not request.row_format
    assert json.loads(encode_predict(request, {"y": np.array([[2.0]], np.float32)}, ["y"])) == {"outputs": [[2.0]]}
    request = decode_predict(body({"inputs": {"a": [[1, 2]], "s": ["x"]}}), TWO)
    answer = json.loads(encode_predict(request, {"p": np.ones((1, 1), np.float32),
                                                 "label": np.array([b"z"], dtype=object)}, ["p", "label"]))
    assert answer == {"outputs": {"p": [[1.0]], "label": ["z"]}}


@pytest.mark.parametrize(("document", "message"), [
    ({}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, "Not allowed to have both 'inputs' and 'instances' keys"),
    ({"signature_name": "other", "instances": [[1, 2, 3]]}, 'signature name: "other" not found'),
    ({"instances": [[1, 2, 3], [4, 5]]}, "input 'x': the values do not form a tensor"),
    ({"instances": [["a", "b", "c"]]}, "input 'x': expects DT_FLOAT numbers"),
    ({"instances": "nope"}, "'instances' must be a list"),
    ({"instances": []}, "'instances' is empty"),
])
def test_bad_bodies_are_400_naming_the_problem(document: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_predict(body(document), ONE)


def test_bad_bodies_for_several_inputs() -> None:
    with pytest.raises(InvalidRequest, match="each instance must be an object naming every input"):
        decode_predict(body({"instances": [[1, 2]]}), TWO)
    with pytest.raises(InvalidRequest, match=r"instances\[0\] has inputs \['a'\]"):
        decode_predict(body({"instances": [{"a": [1, 2]}]}), TWO)
    with pytest.raises(InvalidRequest, match="input 'a': expects DT_INT64, got a fractional number"):
        decode_predict(body({"inputs": {"a": [[1.5, 2]], "s": ["x"]}}), TWO)
    with pytest.raises(InvalidRequest, match="not valid base64"):
        decode_predict(body({"inputs": {"a": [[1, 2]], "s": [{"b64": "%%%"}]}}), TWO)
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        decode_predict(b"{", ONE)


def test_metadata_and_status_in_tf_servings_json() -> None:
    meta = model_metadata("m", "3", TWO)
    assert meta["model_spec"] == {"name": "m", "signature_name": "", "version": "3"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["a"]["dtype"] == "DT_INT64" and sig["inputs"]["s"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in sig["inputs"]["a"]["tensor_shape"]["dim"]] == ["-1", "2"]
    status = version_status([("1", "READY", ""), ("2", "UNAVAILABLE", "bad file"), ("3", "LOADING", "")])
    assert [(s["version"], s["state"]) for s in status["model_version_status"]] == [
        ("3", "LOADING"), ("2", "END"), ("1", "AVAILABLE")]
    assert status["model_version_status"][1]["status"] == {"error_code": "UNKNOWN", "error_message": "bad file"}
    assert status["model_version_status"][2]["status"] == {"error_code": "OK", "error_message": ""}
