"""TorchServe archives without Ray: unpacking a .mar made by torch-model-archiver into a model folder,
its handler run by TorchServe's own ts package (per-request answers, statuses and failures), and the
inference API's request parts and error JSON."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ts_archives import FEATURES, archive, mlp_module

from backends.errors import BackendLoadError, ConfigError, HandlerError, InvalidRequest, ModelNotFound
from backends.registry import create_backend, detect_platform
from backends.torchserve.wire import TsParameter, TsRequest, decoded_value, worker_request
from deployments.ingress.http import HttpReply
from deployments.ingress.torchserve_http import handler_headers, request_parts, ts_error
from deployments.repository.config import load_config_file
from deployments.repository.mar import mar_settings, model_store_archives, unpack_mar


def _element(value) -> dict[str, np.ndarray]:
    array = np.empty((1, 1), dtype=object)
    array[0, 0] = value
    return {"body": array}


def _backend(folder: Path, version: int):
    backend = create_backend(load_config_file(folder), folder / str(version))
    backend.load()
    return backend


def test_an_archive_unpacks_to_a_model_folder_with_its_batching(ts_model_store: Path, tmp_path: Path) -> None:
    model = unpack_mar(ts_model_store / "mlp.mar", tmp_path)
    assert (model.name, model.version, model.model_version, model.labels) == ("mlp", 1, "1.0", (("1.0", 1),))
    config = load_config_file(model.folder)
    assert config.platform == "torchserve" and config.max_batch_size == 4
    assert config.dynamic_batching.max_queue_delay_microseconds == 200_000
    assert detect_platform(model.folder / "1") == "torchserve"
    assert [t.name for t in config.outputs] == ["output", "content_type"]
    marker = model.folder / "1" / ".infergrid-source"
    before = marker.stat().st_mtime_ns
    assert unpack_mar(ts_model_store / "mlp.mar", tmp_path).folder == model.folder
    assert marker.stat().st_mtime_ns == before  # unchanged archive: not unpacked again
    echo = unpack_mar(ts_model_store / "echo.mar", tmp_path, name="echo_again")
    assert (echo.name, echo.version, echo.labels) == ("echo_again", 2, ())


def test_bad_archives_are_refused_naming_the_problem(tmp_path: Path) -> None:
    (tmp_path / "plain.mar").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a .mar archive"):
        unpack_mar(tmp_path / "plain.mar", tmp_path / "cache")
    with zipfile.ZipFile(tmp_path / "nomanifest.mar", "w") as z:
        z.writestr("handler.py", "")
    with pytest.raises(ConfigError, match="MAR-INF/MANIFEST.json: missing"):
        unpack_mar(tmp_path / "nomanifest.mar", tmp_path / "cache")
    with zipfile.ZipFile(tmp_path / "escape.mar", "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "x", "handler": "h.py"}}))
        z.writestr("../outside.py", "")
    with pytest.raises(ConfigError, match="outside the model folder"):
        unpack_mar(tmp_path / "escape.mar", tmp_path / "cache")
    assert not (tmp_path / "outside.py").exists()


@pytest.mark.parametrize("text, problem", [
    ("batchSize: 0", "batchSize: 0 is not a whole number >= 1"), ("maxBatchDelay: fast", "maxBatchDelay"),
    ("deviceType: tpu", "deviceType: 'tpu'"), ("- a list", "a mapping"), ("a: [", "not YAML")])
def test_bad_model_config_yaml_names_the_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        mar_settings(text, "m.mar: model-config.yaml")


def test_model_config_yaml_settings() -> None:
    settings = mar_settings("batchSize: 8\nmaxBatchDelay: 5\nminWorkers: 2\ndeviceType: cpu\nhandler: {x: 1}\n", "y")
    assert (settings.batch_size, settings.max_batch_delay_ms, settings.min_workers, settings.device_type) == \
        (8, 5, 2, "cpu")


def test_models_flag_names_archives_of_the_store(ts_model_store: Path) -> None:
    assert [p.name for _, p in model_store_archives(ts_model_store, ["all"])] == ["echo.mar", "image.mar", "mlp.mar"]
    assert model_store_archives(ts_model_store, ["scorer=mlp.mar,echo.mar"]) == [
        ("scorer", ts_model_store / "mlp.mar"), (None, ts_model_store / "echo.mar")]
    with pytest.raises(ConfigError, match="nothing.mar is not in the model store"):
        model_store_archives(ts_model_store, ["nothing.mar"])


def test_a_basehandler_subclass_batches_and_answers_as_torchserve_encodes(ts_model_store: Path,
                                                                           tmp_path: Path) -> None:
    import torch

    model = unpack_mar(ts_model_store / "mlp.mar", tmp_path)
    backend = _backend(model.folder, model.version)
    rows = np.random.default_rng(3).random((3, FEATURES)).astype(np.float32)
    bodies = [json.dumps({"features": row.tolist()}).encode() for row in rows]
    results = backend.execute_requests([_element(bodies[0]), _element(tuple(TsRequest(
        (TsParameter("body", "application/json", bodies[1]),)))), _element(bodies[2])])
    with torch.no_grad():
        expected = mlp_module()(torch.from_numpy(rows))[:, 0].tolist()
    answers = [json.loads(r["output"][0, 0]) for r in results]
    assert [a["batch"] for a in answers] == [3, 3, 3]
    np.testing.assert_allclose([a["score"] for a in answers], expected, rtol=1e-6)
    assert results[0]["output"][0, 0].startswith(b'{\n  "score"')  # json.dumps(indent=2), as TorchServe


def test_a_module_handler_fails_one_request_of_a_batch(ts_model_store: Path, tmp_path: Path) -> None:
    model = unpack_mar(ts_model_store / "echo.mar", tmp_path)
    backend = _backend(model.folder, model.version)
    ok, refused, tagged = backend.execute_requests([
        _element(b"hello"), _element(b"fail"),
        _element(tuple(TsRequest((TsParameter("body", "text/plain", b"xyz"),), (("x-tag", "t1"),))))])
    assert ok["output"][0, 0] == b"5 bytes, tag None, batch 3" and ok["content_type"][0, 0] == b"text/plain"
    assert isinstance(refused, HandlerError) and refused.http_status == 422 and refused.body == b"refused"
    assert str(refused) == "no fail allowed"
    assert tagged["output"][0, 0] == b"3 bytes, tag t1, batch 3"


def test_a_failing_handler_fails_its_batch_with_torchserves_status(tmp_path: Path) -> None:
    handler = tmp_path / "raising.py"
    handler.write_text("from ts.utils.util import PredictionException\n"
                       "def handle(data, context):\n"
                       "    if data is None:\n        return None\n"
                       "    if data[0].get('body') == b'predict':\n"
                       "        raise PredictionException('bad input for this model', 418)\n"
                       "    if data[0].get('body') == b'count':\n        return ['one answer', 'too many']\n"
                       "    raise RuntimeError('boom')\n")
    mar = archive(tmp_path / "store", "raising", str(handler), "1")
    model = unpack_mar(mar, tmp_path / "cache")
    backend = _backend(model.folder, 1)
    [first, second] = backend.execute_requests([_element(b"x"), _element(b"y")])
    assert isinstance(first, HandlerError) and first.http_status == 503 and "RuntimeError: boom" in str(first)
    assert first.body is None
    [coded] = backend.execute_requests([_element(b"predict")])
    assert coded.http_status == 418 and str(coded) == "bad input for this model"
    [counted] = backend.execute_requests([_element(b"count")])
    assert counted.http_status == 503 and "returned 2 answers for 1 requests" in str(counted)


def test_unmet_requirements_fail_the_load_naming_them(tmp_path: Path) -> None:
    handler = tmp_path / "plain.py"
    handler.write_text("def handle(data, context):\n    return data and [b'' for _ in data]\n")
    (tmp_path / "requirements.txt").write_text("numpy>=1\nsurely-not-installed-package==9.9\n")
    mar = archive(tmp_path / "store", "needs", str(handler), "1", requirements=tmp_path / "requirements.txt")
    model = unpack_mar(mar, tmp_path / "cache")
    backend = create_backend(load_config_file(model.folder), model.folder / "1")
    with pytest.raises(BackendLoadError, match="asks for surely-not-installed-package==9.9, not installed"):
        backend.load()


def test_request_parts_as_torchserves_frontend_makes_them() -> None:
    assert request_parts("application/json; charset=utf-8", b'{"a": 1}') == (
        TsParameter("body", "application/json", b'{"a": 1}'),)
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"cat.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\x00\x01" + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{boundary}--\r\n".encode()
    parts = request_parts(f"multipart/form-data; boundary={boundary}", body)
    assert parts == (TsParameter("data", "image/png", b"\x89PNG\x00\x01"), TsParameter("note", "text/plain", b"hi"))
    with pytest.raises(InvalidRequest, match="no form field"):
        request_parts("multipart/form-data; boundary=other", body)


def test_worker_requests_decode_parts_as_torchserves_worker() -> None:
    assert decoded_value("application/json", b'{"a": [1]}') == {"a": [1]}
    assert decoded_value("text/plain", b"hi") == "hi"
    assert decoded_value("application/json", b"{broken") == b"{broken"
    assert decoded_value("image/png", b"\x89") == b"\x89"
    request = worker_request(b"raw", "id-1")
    assert request["parameters"] == [{"name": "body", "contentType": "", "value": b"raw"}]
    assert worker_request(tuple(TsRequest((TsParameter("x", "text/plain", b"v"),), (("k", "v"),))), "2")["headers"] \
        == [{"name": b"k", "value": b"v"}]
    with pytest.raises(TypeError, match="bytes or a TsRequest"):
        worker_request(3.5, "3")


def test_errors_are_torchserves_json_and_a_handlers_own_answer_passes() -> None:
    reply = ts_error(ModelNotFound("Model not found: nope"))
    assert reply.status == 404 and json.loads(reply.body) == {
        "code": 404, "type": "ModelNotFoundException", "message": "Model not found: nope"}
    assert json.loads(ts_error(HandlerError("boom", 503)).body)["type"] == "ServiceUnavailableException"
    own = ts_error(HandlerError("no", 422, b"refused", "text/plain"))
    assert (own.status, own.body, own.media_type) == (422, b"refused", "text/plain")
    assert isinstance(own, HttpReply)


def test_torchserve_metric_names_from_the_same_counters() -> None:
    from deployments.observability.torchserve_metrics import requested_names, torchserve_metrics_text

    merged = {"counters": [["nv_inference_request_success", ["mlp", "1"], 3.0],
                           ["nv_inference_request_failure", ["mlp", "1", "BACKEND"], 1.0],
                           ["nv_inference_request_duration_us", ["mlp", "1"], 1500.5],
                           ["nv_inference_queue_duration_us", ["echo", "2"], 20.0]]}
    text = torchserve_metrics_text(merged, "node-a").decode()
    assert 'ts_inference_requests_total{hostname="node-a",model_name="mlp",model_version="1"} 4.0' in text
    assert 'ts_inference_latency_microseconds{hostname="node-a",model_name="mlp",model_version="1"} 1500.5' in text
    assert 'ts_queue_latency_microseconds{hostname="node-a",model_name="echo",model_version="2"} 20.0' in text
    names = requested_names("name[]=ts_queue_latency_microseconds")
    assert names == {"ts_queue_latency_microseconds"} and requested_names("") is None
    assert "ts_inference_requests_total" not in torchserve_metrics_text(merged, "h", names).decode()


def test_handlers_see_the_headers_but_never_the_api_key() -> None:
    assert handler_headers({"x-tag": "t", "authorization": "Bearer k-1", "content-type": "text/plain"}) == (
        ("x-tag", "t"), ("content-type", "text/plain"))
