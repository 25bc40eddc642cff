"""KServe v2 gRPC through an unchanged ``tritonclient.grpc``: the same models, checks and numbers as HTTP."""

from __future__ import annotations

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.integration

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def client(served: dict):
    with grpcclient.InferenceServerClient(served["grpc"]) as c:
        yield c


def fraud_inputs(rows: np.ndarray):
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return [tensor]


def http_answer(url: str, rows: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}
    response = requests.post(f"{url}/v2/models/fraud/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"][0]["data"], np.float32).reshape(len(rows), 1)


def test_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("fraud", "1")
    assert not client.is_model_ready("fraud", "9") and not client.is_model_ready("nothing_here")
    server = client.get_server_metadata()
    assert server.name == "infergrid" and "binary_tensor_data" in server.extensions
    meta = client.get_model_metadata("fraud")
    assert meta.name == "fraud" and list(meta.versions) == ["1"] and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("features", "FP32", [-1, 16])]
    composite = client.get_model_metadata("loan_decision")
    assert "amount" in [t.name for t in composite.inputs]


def test_infer_matches_http(client, url: str) -> None:
    rows = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    result = client.infer("fraud", fraud_inputs(rows), request_id="grpc-1",
                          outputs=[grpcclient.InferRequestedOutput("fraud_probability")])
    got = result.as_numpy("fraud_probability")
    assert got.shape == (3, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, http_answer(url, rows), rtol=1e-6)
    response = result.get_response()
    assert response.model_name == "fraud" and response.model_version == "1" and response.id == "grpc-1"
    versioned = client.infer("fraud", fraud_inputs(rows), model_version="1")
    np.testing.assert_allclose(versioned.as_numpy("fraud_probability"), got, rtol=1e-6)


def test_typed_contents_are_accepted(served: dict) -> None:
    """A client that sends typed ``contents`` (not ``raw_input_contents``) gets the same answer."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    rows = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    request = service_pb2.ModelInferRequest(model_name="fraud")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 16])
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    with grpc.insecure_channel(served["grpc"]) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 1)
    np.testing.assert_allclose(got, http_answer(served["url"], rows), rtol=1e-6)


@pytest.mark.parametrize(("model", "inputs", "code", "words"), [
    ("nothing_here", None, "NOT_FOUND", "unknown model"),
    ("fraud", "wrong_width", "INVALID_ARGUMENT", "features"),
    ("broken", None, "UNAVAILABLE", "unavailable"),
])
def test_errors_map_to_grpc_codes(client, model: str, inputs: str | None, code: str, words: str) -> None:
    rows = np.zeros((1, 3 if inputs == "wrong_width" else 16), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, fraud_inputs(rows))
    assert caught.value.status() == f"StatusCode.{code}" and words in caught.value.message(), caught.value
    assert client.is_server_live()  # nothing went down


def test_stream_infer_answers_each_request_in_order(client) -> None:
    import queue

    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(4):
            rows = np.full((1, 16 if i != 2 else 5), i, np.float32)
            client.async_stream_infer("fraud", fraud_inputs(rows), request_id=f"s{i}")
        got = [answers.get(timeout=30) for _ in range(4)]
    finally:
        client.stop_stream()
    assert [r.get_response().id for r, e in got if e is None] == ["s0", "s1", "s3"]
    assert [e for _, e in got if e is not None][0].message().count("features") >= 1


def test_repository_and_statistics(client) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["fraud"].state == "READY" and index["broken"].state == "UNAVAILABLE"
    client.infer("fraud", fraud_inputs(np.zeros((1, 16), np.float32)))
    import time

    time.sleep(1.5)  # replicas report their counts every second
    stats = client.get_inference_statistics("fraud")
    [row] = [s for s in stats.model_stats if s.version == "1"]
    assert row.name == "fraud" and row.inference_count >= 1 and row.inference_stats.success.count >= 1
    with pytest.raises(InferenceServerException) as caught:  # the controller polls: explicit load refused
        client.load_model("fraud")
    assert "explicit" in caught.value.message()
