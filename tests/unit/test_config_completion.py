"""The config ``GET /v2/models/{m}/config`` returns: the parsed file completed from the model, in
Triton's JSON form, and the same content as the gRPC message."""

from __future__ import annotations

from backends.signature import ModelSignature, TensorSpec
from deployments.protocol.triton_config import config_message, effective_config
from deployments.repository.config import parse_config

SIGNATURE = ModelSignature(inputs=(TensorSpec("features", "FP32", (-1, 16)), TensorSpec("note", "BYTES", (-1, 1))),
                           outputs=(TensorSpec("p", "FP32", (-1, 1)),))


def test_an_empty_config_is_completed_from_the_model() -> None:
    config = effective_config(parse_config("", "m/config.pbtxt", "m").triton, "m", "onnxruntime_onnx", SIGNATURE, 8)
    assert config["name"] == "m" and config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("features", "TYPE_FP32", [16]), ("note", "TYPE_STRING", [1])]
    assert config["output"][0]["dims"] == [1]
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert [(g["name"], g["kind"], g["count"]) for g in config["instance_group"]] == [("m_0", "KIND_CPU", 1)]
    assert "dynamic_batching" not in config  # not batching unless the config asks, as in Triton


def test_written_fields_are_kept_and_defaults_printed() -> None:
    text = ('backend: "onnxruntime" max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ] '
            'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ] '
            'dynamic_batching { max_queue_delay_microseconds: 50 } '
            'instance_group [ { count: 2 kind: KIND_AUTO } ] parameters { key: "k" value { string_value: "v" } } '
            'model_warmup [ { name: "w" batch_size: 1 } ]')
    parsed = parse_config(text, "m/config.pbtxt", "m").triton
    config = effective_config(parsed, "m", "onnxruntime_onnx", SIGNATURE, 4, device="cuda:0")
    assert [t["name"] for t in config["input"]] == ["x"]  # the file's, not the model's
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50  # uint64 as a number
    assert config["dynamic_batching"]["preserve_ordering"] is False
    assert config["instance_group"][0] == {**config["instance_group"][0], "name": "m_0", "count": 2, "kind": "KIND_GPU",
                                           "gpus": [0]}
    assert config["parameters"] == {"k": {"string_value": "v"}} and config["model_warmup"][0]["name"] == "w"
    message = config_message(parsed, "m", "onnxruntime_onnx", SIGNATURE, 4)
    assert message.max_batch_size == 4 and message.dynamic_batching.max_queue_delay_microseconds == 50


def test_ensembles_have_no_instance_groups_added() -> None:
    config = effective_config({"platform": "ensemble"}, "e", "ensemble", SIGNATURE, 0)
    assert config["instance_group"] == [] and config["platform"] == "ensemble"
    assert config["input"][0]["dims"] == [-1, 16]
