"""Triton's Python backend: ``model.py`` files written for Triton, served unchanged and called with
unchanged ``tritonclient``: a plain model, one that batches, an async BLS model calling fraud and
credit_score in parallel, one that fails one request of a batch, and one that does not import."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from repository_helpers import ROW, index_rows, output_of, version_apps, wait_for, write_version

pytestmark = pytest.mark.integration

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODELS = Path(__file__).parent / "python_models"
# A warm-up sample read from a file (X = 13), which py_fails answers by failing the whole batch.
COLD_WARMUP = """
model_warmup [ { name: "unlucky" batch_size: 1
  inputs { key: "X" value: { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "thirteen" } } } ]
"""
NAMES = ("py_add_sub", "py_batcher", "py_fails", "py_bls", "py_bf16")


def _place(repository: Path, source: Path, name: str, model_py: str | None = None, config_extra: str = "",
           files: dict[str, bytes] | None = None) -> Path:
    """Copy a model folder in atomically (the polling controller never sees half of it)."""
    staging = repository / f".staging-{name}"
    shutil.copytree(source, staging)
    config = staging / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{source.name}"', f'name: "{name}"') + config_extra)
    if model_py is not None:
        (staging / "1" / "model.py").write_text(model_py)
    for relative, content in (files or {}).items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(content)
    os.rename(staging, repository / name)
    return repository / name


@pytest.fixture(scope="module")
def python_models(served: dict):
    repository, url = served["repository"], served["url"]
    placed = [_place(repository, MODELS / name, name) for name in NAMES]
    placed.append(_place(repository, MODELS / "py_add_sub", "py_broken", "def execute(self requests):\n"))
    placed.append(_place(repository, MODELS / "py_fails", "py_cold", config_extra=COLD_WARMUP,
                         files={"warmup/thirteen": np.array([13], np.int32).tobytes()}))
    for name in NAMES:
        wait_for(lambda n=name: requests.get(f"{url}/v2/models/{n}/ready", timeout=30).status_code == 200, 120,
                 f"{name} to serve")
    yield served
    for folder in placed:
        shutil.rmtree(folder, ignore_errors=True)
    for name in (*NAMES, "py_broken", "py_cold"):
        wait_for(lambda n=name: not index_rows(url, n), 90, f"{name} to leave the repository index")


@pytest.fixture(scope="module")
def http(python_models: dict):
    client = httpclient.InferenceServerClient(python_models["url"].removeprefix("http://"), concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(python_models: dict):
    with grpcclient.InferenceServerClient(python_models["grpc"]) as client:
        yield client


def _input(module, name: str, array: np.ndarray, datatype: str):
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_plain_python_model_answers_and_gets_tritons_initialize_args(protocol: str, http, grpc) -> None:
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    a, b = np.arange(4, dtype=np.float32), np.full(4, 0.5, dtype=np.float32)
    result = client.infer("py_add_sub", [_input(module, "INPUT0", a, "FP32"), _input(module, "INPUT1", b, "FP32")])
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)
    args = json.loads(result.as_numpy("ARGS")[0])
    assert args["model_name"] == args["config_name"] == "py_add_sub" and args["model_version"] == "1"
    assert args["model_instance_kind"] in ("CPU", "GPU") and args["model_instance_name"] == "py_add_sub_0_0"
    assert Path(args["model_repository"]).name == "py_add_sub" and args["model_instance_device_id"] == "0"
    assert args["calls_before"] >= 2  # model_warmup ran its sample twice before any request


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classification_returns_the_top_classes_with_their_labels(protocol: str, http, grpc) -> None:
    """Triton's classification extension: ``class_count`` on a requested output."""
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    a, b = np.array([0.5, 3.0, -1.0, 2.0], np.float32), np.zeros(4, np.float32)
    inputs = [_input(module, "INPUT0", a, "FP32"), _input(module, "INPUT1", b, "FP32")]
    outputs = [module.InferRequestedOutput("OUTPUT0", class_count=2), module.InferRequestedOutput("OUTPUT1")]
    result = client.infer("py_add_sub", inputs, outputs=outputs)
    assert result.as_numpy("OUTPUT0").tolist() == [b"3.000000:1:east", b"2.000000:3:west"]
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a)  # not asked to classify: the tensor
    x = np.array([[1.0, 5.0], [7.0, 2.0]], np.float32)
    batched = client.infer("py_batcher", [_input(module, "X", x, "FP32")],
                           outputs=[module.InferRequestedOutput("Y", class_count=1)])
    assert batched.as_numpy("Y").tolist() == [[b"10.000000:1"], [b"14.000000:0"]]  # per row, no labels


def test_a_python_model_reports_its_config_and_metadata(http, grpc) -> None:
    config = http.get_model_config("py_add_sub")
    assert config["backend"] == "python" and [t["name"] for t in config["input"]] == ["INPUT0", "INPUT1"]
    assert grpc.get_model_config("py_batcher").config.max_batch_size == 8
    assert http.get_model_metadata("py_add_sub")["platform"] == "python"


def test_execute_receives_the_requests_the_batcher_gathered(http) -> None:
    rows = [np.full((1, 2), i, dtype=np.float32) for i in range(6)]
    pending = [http.async_infer("py_batcher", [_input(httpclient, "X", x, "FP32")]) for x in rows]
    results = [p.get_result(timeout=60) for p in pending]
    for x, result in zip(rows, results, strict=True):
        np.testing.assert_allclose(result.as_numpy("Y"), x * 2)  # each request its own rows back
    assert max(int(r.as_numpy("REQUESTS")[0, 0]) for r in results) > 1, "no execute call saw two requests"


def test_an_error_response_fails_only_its_own_request(url: str, python_models: dict) -> None:
    def call(x: int) -> requests.Response:
        body = {"inputs": [{"name": "X", "shape": [1, 1], "datatype": "INT32", "data": [x]}]}
        return requests.post(f"{url}/v2/models/py_fails/infer", json=body, timeout=60)

    with ThreadPoolExecutor(3) as pool:
        good, bad, other = pool.map(call, [1, -4, 2])
    assert bad.status_code == 400 and "X must be >= 0, got -4" in bad.json()["error"], bad.text
    assert good.status_code == other.status_code == 200
    assert good.json()["outputs"][0]["data"] == [2] and other.json()["outputs"][0]["data"] == [3]
    unlucky = call(13)
    assert unlucky.status_code == 500 and "13 is unlucky" in unlucky.json()["error"], unlucky.text
    assert call(5).json()["outputs"][0]["data"] == [6]  # the replica survived a failed batch


def _successes(client, model: str) -> int:
    stats = client.get_inference_statistics(model)["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def test_an_async_bls_model_calls_two_models_in_parallel(http, grpc) -> None:
    before = _successes(http, "credit_score")
    features, applicant = np.repeat(ROW, 3, axis=0), np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)
    fraud = http.infer("fraud", [_input(httpclient, "features", features, "FP32")]).as_numpy("fraud_probability")
    credit = http.infer("credit_score", [_input(httpclient, "applicant", applicant, "FP32")]).as_numpy("credit_score")
    inputs = [_input(grpcclient, "features", features, "FP32"), _input(grpcclient, "applicant", applicant, "FP32")]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: grpc.infer("py_bls", inputs), range(8)))
    for result in results:
        np.testing.assert_allclose(result.as_numpy("fraud_probability"), fraud, rtol=1e-5)
        np.testing.assert_allclose(result.as_numpy("credit_score"), credit, rtol=1e-5)
        np.testing.assert_array_equal(result.as_numpy("approved"), (fraud < 0.5) & (credit > 0.0))
    # The BLS calls went through the data plane: counted as credit_score's own requests.
    wait_for(lambda: _successes(http, "credit_score") >= before + 1 + 8, 60, "credit_score to count the BLS calls")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bf16_tensors_in_and_out(protocol: str, http, grpc) -> None:
    """BF16 travels as raw bytes (tritonclient sends it binary only), as ml_dtypes.bfloat16 arrays."""
    import ml_dtypes

    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    x = np.array([[0.5, -1.25, 3.0], [1.0, 2.0, 4.0]], dtype=ml_dtypes.bfloat16)
    tensor = module.InferInput("X", list(x.shape), "BF16")
    tensor.set_data_from_numpy(x)
    result = client.infer("py_bf16", [tensor])
    y = result.as_numpy("Y")
    output = result.get_output("Y")
    assert (output["datatype"] if protocol == "http" else output.datatype) == "BF16"
    np.testing.assert_array_equal(np.asarray(y, dtype=np.float32), np.asarray(x, dtype=np.float32) * 2)


def _load_failure(url: str, model: str) -> str:
    """The reason the repository index gives for ``model`` once its load has failed."""
    def reason() -> str:
        rows = index_rows(url, model)
        return rows[0].get("reason", "") if rows else ""
    return wait_for(reason, 120, f"{model}'s load to fail")


def test_a_python_model_that_does_not_import_is_unavailable_with_the_reason(url: str, python_models: dict) -> None:
    text = _load_failure(url, "py_broken")
    assert "model.py" in text and "SyntaxError" in text, text
    with pytest.raises(InferenceServerException):
        httpclient.InferenceServerClient(url.removeprefix("http://")).infer(
            "py_broken", [_input(httpclient, "INPUT0", np.zeros(4, np.float32), "FP32")])


def test_a_failing_model_warmup_keeps_the_version_from_serving(url: str, python_models: dict) -> None:
    text = _load_failure(url, "py_cold")
    assert "warm-up 'unlucky' failed" in text and "13 is unlucky" in text, text
    assert requests.get(f"{url}/v2/models/py_cold/ready", timeout=30).status_code != 200


def test_a_hot_swap_of_a_model_called_by_bls_fails_no_request(python_models: dict, new_model) -> None:
    """The BLS caller follows the called model's table and acks it: while swap_target goes from
    version 1 to 2 under load through py_bls_swap, no request fails and each answer is v1's or v2's."""
    repository, url = python_models["repository"], python_models["url"]
    target = new_model("swap_target", seed=21)
    expected = {1: output_of(target / "1")}
    caller = _place(repository, MODELS / "py_bls", "py_bls_swap",
                    config_extra='parameters { key: "fraud_model" value: { string_value: "swap_target" } }\n')
    try:
        wait_for(lambda: requests.get(f"{url}/v2/models/py_bls_swap/ready", timeout=30).status_code == 200, 120,
                 "py_bls_swap to serve")
        body = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": ROW.ravel().tolist()},
                           {"name": "applicant", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]}
        replies: list[tuple[int, float | None]] = []
        stop = threading.Event()

        def client() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    answer = session.post(f"{url}/v2/models/py_bls_swap/infer", json=body, timeout=60)
                    value = next((o["data"][0] for o in answer.json().get("outputs", ())
                                  if o["name"] == "fraud_probability"), None) if answer.status_code == 200 else None
                    replies.append((answer.status_code, value))
        threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(replies) > 20, 60, "traffic through py_bls_swap")
        expected[2] = write_version(target, 2, seed=22, atomic=True)
        wait_for(lambda: replies and replies[-1][1] == pytest.approx(expected[2], abs=1e-5), 90,
                 "answers from swap_target version 2")
        wait_for(lambda: len(version_apps("swap_target")) == 1, 90, "version 1 to be removed")
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(60)
        failed = [r for r in replies if r[0] != 200]
        assert not failed, f"{len(failed)} of {len(replies)} requests failed during the swap"
        assert all(any(v == pytest.approx(e, abs=1e-5) for e in expected.values()) for _, v in replies)
    finally:
        shutil.rmtree(caller, ignore_errors=True)
        wait_for(lambda: not index_rows(url, "py_bls_swap"), 90, "py_bls_swap to be removed")


def test_finalize_runs_when_the_model_is_unloaded(python_models: dict) -> None:
    repository, url = python_models["repository"], python_models["url"]
    mark = repository.parent / "finalized-py_unload"
    folder = _place(repository, MODELS / "py_add_sub", "py_unload")
    wait_for(lambda: requests.get(f"{url}/v2/models/py_unload/ready", timeout=30).status_code == 200, 120,
             "py_unload to serve")
    assert not mark.exists()
    shutil.rmtree(folder)
    wait_for(mark.exists, 90, "finalize() to run at unload")
