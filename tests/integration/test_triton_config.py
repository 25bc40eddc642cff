"""Triton's model-configuration extension through unchanged ``tritonclient.http`` and ``tritonclient.grpc``:
the config as Triton reports it (completed from the model), and what ``perf_analyzer`` asks before it
sends a request."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def http(served: dict):
    client = httpclient.InferenceServerClient(served["url"].removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(served: dict):
    with grpcclient.InferenceServerClient(served["grpc"]) as client:
        yield client


def test_config_is_the_file_completed_as_triton_completes_it(http, grpc) -> None:
    config = http.get_model_config("fraud")
    assert config["name"] == "fraud" and config["max_batch_size"] == 64
    assert config["backend"] == "onnxruntime" and config["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("features", "TYPE_FP32", [16])]
    assert config["output"][0]["dims"] == [1]
    assert "dynamic_batching" in config and config["version_policy"] == {"latest": {"num_versions": 1}}
    assert [(g["name"], g["count"], g["kind"]) for g in config["instance_group"]] == [("fraud_0", 1, "KIND_CPU")]
    assert http.get_model_config("fraud", "1") == config
    over_grpc = grpc.get_model_config("fraud", as_json=True)["config"]
    assert over_grpc["name"] == "fraud" and over_grpc["max_batch_size"] == 64
    assert over_grpc["input"][0]["dims"] == ["16"]  # protobuf JSON's int64, as tritonclient gives it
    assert grpc.get_model_config("fraud").config.dynamic_batching is not None


def test_a_model_without_config_gets_its_signature_from_the_model(http, grpc) -> None:
    config = http.get_model_config("bare_onnx")
    assert config["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"]) for t in config["input"]] == [("features", "TYPE_FP32")]
    assert [t["name"] for t in config["output"]] == ["fraud_probability"]
    message = grpc.get_model_config("bare_onnx").config
    assert [t.name for t in message.input] == ["features"]


def test_composites_report_their_own_config(http, grpc) -> None:
    ensemble = http.get_model_config("risk_ensemble")
    assert ensemble["platform"] == "ensemble" and ensemble["ensemble_scheduling"]["step"]
    steps = grpc.get_model_config("risk_ensemble").config.ensemble_scheduling.step
    assert {step.model_name for step in steps} == {"fraud", "credit_score"}
    assert http.get_model_config("loan_decision")["input"]


def test_unknown_models_and_versions_are_not_found(http, grpc, url: str) -> None:
    with pytest.raises(InferenceServerException):
        http.get_model_config("nothing_here")
    assert requests.get(f"{url}/v2/models/fraud/versions/9/config", timeout=30).status_code == 404
    with pytest.raises(InferenceServerException) as info:
        grpc.get_model_config("nothing_here")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_a_config_triton_refuses_names_file_line_and_field(url: str) -> None:
    rows = requests.post(f"{url}/v2/repository/index", json={}, timeout=30).json()
    reason = next(r["reason"] for r in rows if r["name"] == "broken")
    assert "broken/config.pbtxt:2:" in reason and "max_batch_size" in reason, reason


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_preflight_calls(protocol: str, http, grpc) -> None:
    """What perf_analyzer asks before it loads a server: liveness, server and model metadata, the
    config (batch size, inputs, batching), readiness, statistics."""
    client = http if protocol == "http" else grpc
    as_json = {} if protocol == "http" else {"as_json": True}
    assert client.is_server_live() and client.is_server_ready()
    assert "model_configuration" in client.get_server_metadata(**as_json)["extensions"]
    metadata = client.get_model_metadata("fraud", **as_json)
    assert metadata["inputs"][0]["name"] == "features"
    config = client.get_model_config("fraud", **as_json)
    config = config if protocol == "http" else config["config"]
    assert int(config["max_batch_size"]) == 64 and config["input"][0]["name"] == "features"
    assert client.is_model_ready("fraud")
    stats = client.get_inference_statistics("fraud", **as_json)
    assert stats["model_stats"][0]["name"] == "fraud"
