"""``infergrid serve --model-store DIR --models all`` as TorchServe is started: archives made by the real
torch-model-archiver, their handlers run unchanged, TorchServe's inference API on its own port, and
the same models on v2 HTTP (bytes in, the handler's answer out).

Named to run right after test_a_cli, before the session's shared cluster starts (it runs its own
embedded Ray, as a user's ``infergrid serve`` does).
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import free_port
from test_a_cli import start_server
from ts_archives import FEATURES, mlp_module

pytestmark = pytest.mark.integration


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.arange(width * height, dtype=np.uint8).reshape(height, width), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_torchserve_model_store_serves_its_handlers_unchanged(ts_model_store: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("INFERGRID_MAR_CACHE", str(tmp_path / "unpacked"))  # this node's cache of archives
    port, ts_port, ts_metrics_port = free_port(), free_port(), free_port()
    url, ts = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ts_port}"
    log = tmp_path / "serve.log"
    process = start_server([], port, log, "--model-store", str(ts_model_store), "--models", "all",
                           "--ts-inference-port", str(ts_port), "--ts-metrics-port", str(ts_metrics_port))
    try:
        assert requests.get(f"{ts}/ping", timeout=30).json() == {"status": "Healthy"}
        # A BaseHandler subclass over TorchScript: answers equal the model run here, batched (batchSize 4).
        rows = np.random.default_rng(5).random((8, FEATURES)).astype(np.float32)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda row: requests.post(
                f"{ts}/predictions/mlp", json={"features": row.tolist()}, timeout=60), rows))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        with torch.no_grad():
            expected = mlp_module()(torch.from_numpy(rows))[:, 0].numpy()
        np.testing.assert_allclose([a.json()["score"] for a in answers], expected, rtol=1e-5)
        assert max(a.json()["batch"] for a in answers) > 1  # the batcher gathered concurrent requests
        assert requests.post(f"{ts}/predictions/mlp/1.0", json={"features": [0.0] * FEATURES}, timeout=60).ok
        # /explanations: the handler's explain_handle, batched apart from predictions that arrive with it.
        with ThreadPoolExecutor(8) as pool:
            mixed = list(pool.map(lambda item: requests.post(
                f"{ts}/{'explanations' if item[0] % 2 else 'predictions'}/mlp", json={"features": item[1].tolist()},
                timeout=60), enumerate(rows)))
        assert all(a.status_code == 200 for a in mixed), [a.text for a in mixed]
        inputs = torch.from_numpy(rows).requires_grad_(True)
        mlp_module()(inputs).sum().backward()
        for index, answer in enumerate(mixed):
            if index % 2:
                np.testing.assert_allclose(answer.json()["saliency"], inputs.grad[index].numpy(), rtol=1e-4)
            else:
                assert answer.json()["score"] == pytest.approx(float(expected[index]), rel=1e-5)
        assert requests.request("OPTIONS", f"{ts}/", timeout=30).json()["paths"]["/ping"]
        missing = requests.post(f"{ts}/predictions/mlp/9.9", json={"features": [0.0] * FEATURES}, timeout=60)
        assert missing.status_code == 404 and missing.json()["type"] == "ModelNotFoundException", missing.text
        # A handle() module: the handler's content type and headers; its per-request error keeps the others.
        ok = requests.post(f"{ts}/predictions/echo", data=b"hello", headers={"X-Tag": "t7"}, timeout=60)
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain"), ok.text
        assert ok.text.startswith("5 bytes, tag t7")
        refused = requests.post(f"{ts}/predictions/echo", data=b"fail", timeout=60)
        assert (refused.status_code, refused.text) == (422, "refused")
        # Raw image bytes as a multipart form field, beside a text field.
        png = _png(6, 4)
        image = requests.post(f"{ts}/predictions/image", files={"data": ("cat.png", png, "image/png")},
                              data={"note": "hi"}, timeout=60)
        assert image.status_code == 200, image.text
        assert image.json() == {"size": [6, 4], "mean": float(np.arange(24).mean()), "note": "hi"}
        unknown = requests.post(f"{ts}/predictions/nothing", data=b"x", timeout=60)
        assert unknown.status_code == 404 and json.loads(unknown.text)["code"] == 404
        # The same model over KServe v2: bytes in, the handler's answer out.
        v2 = requests.post(f"{url}/v2/models/echo/infer", timeout=60, json={"inputs": [
            {"name": "body", "shape": [1, 1], "datatype": "BYTES", "data": ["abc"]}]})
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
        assert outputs["output"][0].startswith("3 bytes") and outputs["content_type"] == ["text/plain"]
        assert requests.get(f"{url}/v2/models/mlp", timeout=30).json()["platform"] == "torchserve"
        check_torchserve_metrics(f"http://127.0.0.1:{ts_metrics_port}")
        ours = requests.get(f"{url}/metrics", timeout=30).text  # TorchServe's names beside Triton's on ours
        assert 'ts_inference_requests_total{' in ours and 'nv_inference_request_success{' in ours
        process.send_signal(signal.SIGTERM)  # test_a_cli holds the full stop checks
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def check_torchserve_metrics(metrics_url: str) -> None:
    """TorchServe's metrics port: its ts_* names and labels, the requests above counted, ?name[]= filtering."""
    deadline = time.monotonic() + 20  # replicas report every second
    while True:
        text = requests.get(f"{metrics_url}/metrics", timeout=30).text
        counted = [line for line in text.splitlines()
                   if line.startswith("ts_inference_requests_total{") and 'model_name="mlp"' in line]
        if counted and float(counted[0].split()[-1]) >= 9:  # 8 at once and one by its label
            break
        assert time.monotonic() < deadline, text[:2000]
        time.sleep(0.5)
    assert 'model_version="1"' in counted[0] and "hostname=" in counted[0]
    assert "ts_queue_latency_microseconds{" in text and "ts_inference_latency_microseconds{" in text
    only = requests.get(f"{metrics_url}/metrics?name[]=ts_queue_latency_microseconds", timeout=30).text
    assert "ts_queue_latency_microseconds{" in only and "ts_inference_requests_total" not in only
    assert requests.get(f"{metrics_url}/predictions/mlp", timeout=30).status_code == 404
