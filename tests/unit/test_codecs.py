"""v2 tensor codecs: every datatype, JSON and binary, nested and flat, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.dtypes import V2_DATATYPES, config_to_v2, v2_to_numpy
from backends.errors import InputMismatch, InvalidRequest
from deployments.protocol.tensors import array_from_binary, array_from_json, array_to_binary, array_to_json
from deployments.protocol.v2 import decode_infer_request, encode_infer_response


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"ab", b""], [b"\xc3\xa9", b"xyz"]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    dtype = v2_to_numpy(datatype)
    return (np.arange(4).reshape(2, 2) * (1.5 if dtype.kind == "f" else 1)).astype(dtype)


@pytest.mark.parametrize("datatype", V2_DATATYPES)
def test_json_round_trip_every_datatype(datatype: str) -> None:
    array = sample(datatype)
    data = json.loads(json.dumps(array_to_json(array)))
    back = array_from_json("x", datatype, [2, 2], data)
    assert back.dtype == array.dtype and back.shape == (2, 2)
    assert back.tolist() == array.tolist()


@pytest.mark.parametrize("datatype", V2_DATATYPES)
def test_binary_round_trip_every_datatype(datatype: str) -> None:
    array = sample(datatype)
    back = array_from_binary("x", datatype, [2, 2], array_to_binary(array))
    assert back.tolist() == array.tolist()


def test_nested_and_flat_data_are_the_same() -> None:
    nested = array_from_json("x", "INT32", [2, 3], [[1, 2, 3], [4, 5, 6]])
    flat = array_from_json("x", "INT32", [2, 3], [1, 2, 3, 4, 5, 6])
    assert nested.tolist() == flat.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("datatype, data, message", [
    ("FP32", [1, 2, 3], "needs 4 elements"),
    ("FP32", ["a", "b", "c", "d"], "must be numbers"),
    ("INT8", [1000, 1, 1, 1], "does not fit INT8"),
    ("INT32", [1.5, 1, 1, 1], "must be integers"),
    ("BOOL", [1, 0, 1, 0], "true or false"),
    ("BYTES", [1, 2, 3, 4], "must be strings"),
])
def test_json_data_errors_name_the_input(datatype: str, data: list, message: str) -> None:
    with pytest.raises(InputMismatch, match=f"input 'x'.*{message}"):
        array_from_json("x", datatype, [2, 2], data)


def test_bad_shapes_and_binary_sizes() -> None:
    with pytest.raises(InputMismatch, match="list of integers"):
        array_from_json("x", "FP32", "2x2", [1, 2, 3, 4])
    with pytest.raises(InputMismatch, match="negative"):
        array_from_json("x", "FP32", [-1, 4], [1, 2, 3, 4])
    with pytest.raises(InputMismatch, match="binary_data_size is 3 bytes"):
        array_from_binary("x", "FP32", [1], b"abc")
    with pytest.raises(InputMismatch, match="BYTES"):
        array_from_binary("x", "BYTES", [1], b"\x05\x00\x00\x00ab")


def test_config_types_map_to_v2() -> None:
    assert config_to_v2("TYPE_STRING") == "BYTES"
    assert config_to_v2("TYPE_FP16") == "FP16"


def binary_body(inputs: list[tuple[str, np.ndarray, str]], outputs: list | None = None) -> tuple[bytes, int]:
    blobs = [array_to_binary(a) for _, a, _ in inputs]
    header = {"id": "42", "inputs": [
        {"name": n, "shape": list(a.shape), "datatype": d, "parameters": {"binary_data_size": len(b)}}
        for (n, a, d), b in zip(inputs, blobs)]}
    if outputs is not None:
        header["outputs"] = outputs
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def test_binary_request_and_response() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = np.array([b"hi", b"there"], dtype=object)
    body, length = binary_body([("x", x, "FP32"), ("s", s, "BYTES")],
                               outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}])
    request = decode_infer_request(body, length)
    assert request.inputs["x"].tolist() == x.tolist() and request.inputs["s"].tolist() == [b"hi", b"there"]
    assert request.id == "42"
    out, json_length = encode_infer_response(request, "m", "1", {"y": x * 2, "z": np.array([1, 2], np.int64),
                                                                 "unused": x})
    header = json.loads(out[:json_length])
    assert header["id"] == "42" and [o["name"] for o in header["outputs"]] == ["y", "z"]
    assert header["outputs"][1]["data"] == [1, 2]
    size = header["outputs"][0]["parameters"]["binary_data_size"]
    assert np.frombuffer(out[json_length:json_length + size], np.float32).tolist() == (x * 2).ravel().tolist()


def test_json_response_without_binary() -> None:
    request = decode_infer_request(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1.5]}]}')
    body, length = encode_infer_response(request, "m", "3", {"y": np.array([[0.25]], np.float32)})
    assert length is None
    assert json.loads(body) == {"model_name": "m", "model_version": "3", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [0.25]}]}


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "'inputs' must be a non-empty list"),
    (b'{"inputs": [5]}', "inputs\\[0\\] must be an object"),
    (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', "inputs\\[0\\].name"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}', "'shape' is missing"),
    (b'{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}', "'datatype' is missing"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', "'data' is missing"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}', "unknown datatype"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": 3}', "'outputs'"),
])
def test_malformed_requests(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_infer_request(body)


def test_unknown_requested_output_is_rejected() -> None:
    request = decode_infer_request(
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"nope"}]}')
    with pytest.raises(InputMismatch, match="unknown output 'nope'"):
        encode_infer_response(request, "m", "1", {"y": np.zeros(1, np.float32)})


def test_classification_formats_top_classes_as_triton() -> None:
    from deployments.protocol.classification import classify, classify_outputs

    scores = np.array([[1, 5, 10, 4], [9, 0, 0, 1]], dtype=np.int32)
    assert classify(scores, 2).tolist() == [[b"10:2", b"5:1"], [b"9:0", b"1:3"]]
    assert classify(np.array([0.25, 0.75], np.float32), 5, ("cat", "dog"), batched=False).tolist() == \
        [b"0.750000:1:dog", b"0.250000:0:cat"]
    out = classify_outputs({"p": scores, "q": scores}, {"p": 1}, {}, {"max_batch_size": 0})
    assert out["p"].tolist() == [b"10:2"] and out["q"] is scores  # no batch dimension: one ranking


def test_classification_count_must_be_a_positive_integer() -> None:

    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
            "outputs": [{"name": "y", "parameters": {"classification": "two"}}]}
    with pytest.raises(InvalidRequest, match="'y': parameters.classification must be a positive integer"):
        decode_infer_request(json.dumps(body).encode())
