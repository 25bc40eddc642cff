"""The three example models over real HTTP, through Triton's own client and plain requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as triton

pytestmark = pytest.mark.integration


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def infer(url: str, model: str, name: str, array: np.ndarray, binary: bool = True) -> dict:
    item = triton.InferInput(name, list(array.shape), "FP32")
    item.set_data_from_numpy(array, binary_data=binary)
    result = client(url).infer(model, [item])
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def test_server_endpoints_through_tritonclient(url: str) -> None:
    c = client(url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["name"] == "infergrid"
    for model in ("fraud", "credit_score", "resnet50"):
        assert c.is_model_ready(model) and c.is_model_ready(model, "1")
    meta = c.get_model_metadata("fraud")
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]


def test_fraud_matches_onnxruntime(url: str, served: dict) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(10).standard_normal((3, 16)).astype(np.float32)
    session = ort.InferenceSession(str(served["repository"] / "fraud/1/model.onnx"))
    expected = session.run(None, {"features": x})[0]
    for binary in (True, False):
        got = infer(url, "fraud", "features", x, binary)["fraud_probability"]
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_credit_score_matches_tensorflow(url: str, served: dict) -> None:
    import tensorflow as tf

    x = np.random.default_rng(11).standard_normal((2, 8)).astype(np.float32)
    loaded = tf.saved_model.load(str(served["repository"] / "credit_score/1/model.savedmodel"))
    expected = loaded.signatures["serving_default"](applicant=tf.constant(x))["credit_score"].numpy()
    np.testing.assert_allclose(infer(url, "credit_score", "applicant", x)["credit_score"], expected, rtol=1e-5)


def test_resnet50_matches_torch(url: str, served: dict) -> None:
    import torch

    x = np.random.default_rng(12).standard_normal((1, 3, 224, 224)).astype(np.float32)
    module = torch.jit.load(str(served["repository"] / "resnet50/1/model.pt")).eval()
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(infer(url, "resnet50", "image", x)["logits"], expected, rtol=1e-4, atol=1e-5)


def post_fraud(url: str, rows: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]}
    response = requests.post(f"{url}/v2/models/fraud/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"][0]["data"], np.float32)


async def endpoint_stats() -> dict:
    from ray import serve

    return (await serve.get_app_handle("infergrid:frontdoor").stats.remote())["fraud"]


def test_concurrent_requests_form_batches(url: str, served: dict, run_async) -> None:
    import onnxruntime as ort

    before = run_async(endpoint_stats())["1"]
    rng = np.random.default_rng(13)
    payloads = [rng.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(256)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda rows: post_fraud(url, rows), payloads))
    session = ort.InferenceSession(str(served["repository"] / "fraud/1/model.onnx"))
    for rows, got in zip(payloads, results):  # each request got exactly its own rows back
        np.testing.assert_allclose(got, session.run(None, {"features": rows})[0].ravel(), rtol=1e-5)
    after = run_async(endpoint_stats())["1"]
    formed = {int(k): after["batch_sizes"].get(k, 0) - before["batch_sizes"].get(k, 0) for k in after["batch_sizes"]}
    assert after["requests"] - before["requests"] == 256
    assert after["rows"] - before["rows"] == sum(len(rows) for rows in payloads)
    # 32 clients of mostly 1-3 rows: batches carry several requests' rows, never more than 64.
    assert sum(count for size, count in formed.items() if size > 3) > 0, formed
    assert after["max_rows"] <= 64


def test_deployment_handle_with_numpy(run_async) -> None:
    from deployments.dataplane.handles import get_model_handle

    x = np.zeros((2, 16), np.float32)

    async def call() -> dict:
        return await get_model_handle("fraud").infer.remote({"features": x})

    outputs = run_async(call())
    assert outputs["fraud_probability"].shape == (2, 1) and outputs["fraud_probability"].dtype == np.float32


def test_repository_index_lists_every_model(url: str) -> None:
    rows = requests.post(f"{url}/v2/repository/index", json={}, timeout=10).json()
    states = {row["name"]: row for row in rows}
    assert states["fraud"]["state"] == "READY" and states["fraud"]["version"] == "1"
    assert states["broken"]["state"] == "UNAVAILABLE"
    assert "broken/config.pbtxt:2:" in states["broken"]["reason"] and "max_batch_size" in states["broken"]["reason"]
    assert states["corrupt"]["state"] == "UNAVAILABLE" and "corrupt" in states["corrupt"]["reason"]
