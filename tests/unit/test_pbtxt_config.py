"""config.pbtxt parsing against Triton's ModelConfig schema: errors that name file, line and field,
warnings for valid fields infergrid does not honour, Triton's JSON mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.errors import ConfigError
from deployments.repository.config import parse_config, parse_config_json

FULL = """
name: "m"   # a comment
platform: "onnxruntime_onnx"
max_batch_size: 16
input [
  { name: "a" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape: { shape: [ 2, 2 ] } },
  { name: "b" data_type: TYPE_STRING dims: [ 1 ] }
]
output [ { name: "y", data_type: TYPE_INT64, dims: [ 1 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 500 }
instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]
version_policy: { latest: { num_versions: 2 } }
default_model_filename: "net.onnx"
parameters { key: "half" value: { string_value: "true" } }
parameters: { key: "num_cpus" value: { string_value: "0.25" } }
"""


def test_full_config_parses_every_supported_field() -> None:
    config = parse_config(FULL, "m/config.pbtxt", "m")
    assert config.platform == "onnxruntime"
    assert config.max_batch_size == 16
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("a", "FP32", (-1, 4)), ("b", "BYTES", (1,))]
    assert config.inputs[0].reshape == (2, 2)
    assert config.outputs[0].datatype == "INT64"
    assert config.dynamic_batching.preferred_batch_size == (4, 8)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, "KIND_CPU"), (1, "KIND_GPU")]
    assert config.version_policy.select([1, 2, 3]) == [3, 2]
    assert config.default_model_filename == "net.onnx"
    assert config.parameters == {"half": "true", "num_cpus": "0.25"}
    assert config.warnings == ()
    assert config.signature().inputs[0].shape == (-1, -1, 4)


@pytest.mark.parametrize("backend, platform", [
    ('backend: "pytorch"', "pytorch"), ('platform: "pytorch_libtorch"', "pytorch"),
    ('backend: "tensorflow"', "tensorflow"), ('platform: "tensorflow_savedmodel"', "tensorflow"),
    ('backend: "onnxruntime"', "onnxruntime"), ("", ""),
])
def test_platform_and_backend_spellings(backend: str, platform: str) -> None:
    assert parse_config(backend, "m/config.pbtxt", "m").platform == platform


def test_version_policies() -> None:
    def policy(text: str) -> list[int]:
        return parse_config(f"version_policy: {text}", "m/config.pbtxt", "m").version_policy.select([1, 2, 3, 5])

    assert policy("{ all { } }") == [5, 3, 2, 1]
    assert policy("{ specific { versions: [1, 3] } }") == [3, 1]
    assert policy("{ latest { num_versions: 3 } }") == [5, 3, 2]
    assert parse_config("", "m/config.pbtxt", "m").version_policy.select([1, 2]) == [2]


def test_unknown_fields_warn_and_name_the_field() -> None:
    config = parse_config('platform: "onnxruntime_onnx" response_cache { enable: true } '
                          'dynamic_batching { priority_levels: 2 }', "m/config.pbtxt", "m")
    assert any("response_cache" in w for w in config.warnings)
    assert any("dynamic_batching[0].priority_levels" in w for w in config.warnings)


@pytest.mark.parametrize("text, field", [
    ('platform: "caffe2_netdef"', "platform"),
    ("max_batch_size: -1", "max_batch_size"),
    ('input [ { name: "a" data_type: TYPE_FP32 dims: [ 0 ] } ]', "input[0].dims"),
    ('input [ { data_type: TYPE_FP32 dims: [ 1 ] } ]', "input[0].name"),
    ('output [ { name: "a" dims: [ 1 ] } ]', "output[0].data_type"),
    ('name: "other"', "name"),
    ("instance_group [ { count: -2 } ]", "instance_group[0].count"),
    ('input [ { name: "a" data_type: TYPE_FP32 dims: [1] }, { name: "a" data_type: TYPE_FP32 dims: [1] } ]', "input"),
])
def test_invalid_values_name_file_and_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "m/config.pbtxt", "m")
    assert str(info.value).startswith(f"m/config.pbtxt: {field}"), str(info.value)


@pytest.mark.parametrize("text, line, column, words", [
    ("max_batch_size: 8\nmax_batch_sise: 4", 2, 1, 'no field named "max_batch_sise"'),
    ('max_batch_size: "big"', 1, 17, "max_batch_size"),
    ('input [ { name: "a" data_type: TYPE_FP33 dims: [ 1 ] } ]', 1, 32, "TYPE_FP33"),
    ("instance_group [ { kind: KIND_TPU } ]", 1, 26, "KIND_TPU"),
    ("dynamic_batching {\n  max_queue_delay_microseconds: -5 }", 2, 33, "max_queue_delay_microseconds"),
    ('name: "m', 1, 7, "String missing ending quote"),
    ("input [ { name: ", None, None, ""),
    ("max_batch_size: 4 }", 1, 19, "}"),
])
def test_schema_errors_name_file_line_and_field(text: str, line: int | None, column: int | None, words: str) -> None:
    """As in Triton: what the ModelConfig schema refuses is an error (a misspelt field too)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "m/config.pbtxt", "m")
    message = str(info.value)
    prefix = f"m/config.pbtxt:{line}:" if line is not None else "m/config.pbtxt"
    assert message.startswith(prefix) and words in message, message


def test_json_configs_take_triton_mapping_camel_or_snake_case() -> None:
    camel = parse_config_json(
        '{"name": "m", "backend": "onnxruntime", "maxBatchSize": 8,'
        ' "dynamicBatching": {"maxQueueDelayMicroseconds": "100"},'
        ' "input": [{"name": "a", "dataType": "TYPE_FP32", "dims": ["4"]}],'
        ' "output": [{"name": "y", "dataType": "TYPE_FP32", "dims": [1]}],'
        ' "versionPolicy": {"specific": {"versions": [2]}}, "parameters": {"k": {"stringValue": "v"}}}',
        "m load request", "m")
    snake = parse_config_json(
        '{"name": "m", "backend": "onnxruntime", "max_batch_size": 8,'
        ' "dynamic_batching": {"max_queue_delay_microseconds": 100},'
        ' "input": [{"name": "a", "data_type": "TYPE_FP32", "dims": [4]}],'
        ' "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],'
        ' "version_policy": {"specific": {"versions": ["2"]}}, "parameters": {"k": {"string_value": "v"}}}',
        "m load request", "m")
    assert camel == snake
    assert camel.max_batch_size == 8 and camel.inputs[0].dims == (4,) and camel.parameters == {"k": "v"}
    assert camel.dynamic_batching.max_queue_delay_microseconds == 100
    assert camel.version_policy.select([1, 2, 3]) == [2]
    with pytest.raises(ConfigError, match="maxBatchSise"):
        parse_config_json('{"maxBatchSise": 8}', "m load request", "m")


def test_parsed_config_keeps_triton_form() -> None:
    config = parse_config(FULL, "m/config.pbtxt", "m")
    assert config.triton["max_batch_size"] == 16 and config.triton["input"][0]["dims"] == [-1, 4]
    assert config.triton["dynamic_batching"]["preferred_batch_size"] == [4, 8]


def test_a_config_json_file_is_read_in_tritons_json_mapping(tmp_path: Path) -> None:
    from deployments.repository.config import load_config_file

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({
        "backend": "onnxruntime", "maxBatchSize": 4,
        "input": [{"name": "x", "dataType": "TYPE_FP32", "dims": ["3"]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}))
    config = load_config_file(tmp_path / "m")
    assert config.platform == "onnxruntime" and config.max_batch_size == 4 and config.inputs[0].dims == (3,)
    (tmp_path / "m" / "config.json").write_text('{"maxBatchSise": 4}')
    with pytest.raises(ConfigError, match=r"m/config.json.*maxBatchSise"):
        load_config_file(tmp_path / "m")
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "onnxruntime"')  # config.pbtxt wins when both exist
    assert load_config_file(tmp_path / "m").max_batch_size == 0
