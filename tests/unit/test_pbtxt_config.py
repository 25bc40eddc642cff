"""config.pbtxt parsing: the supported subset, errors that name file and field, warnings."""

from __future__ import annotations

import pytest

from backends.errors import ConfigError
from deployments.repository.config import parse_config
from deployments.repository.pbtxt import parse_text_message

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
    config = parse_config('platform: "onnxruntime_onnx" model_warmup [ { name: "w" } ] '
                          'dynamic_batching { priority_levels: 2 }', "m/config.pbtxt", "m")
    assert any("model_warmup" in w for w in config.warnings)
    assert any("dynamic_batching[0].priority_levels" in w for w in config.warnings)


@pytest.mark.parametrize("text, field", [
    ('platform: "caffe2_netdef"', "platform"),
    ("max_batch_size: -1", "max_batch_size"),
    ('max_batch_size: "big"', "max_batch_size"),
    ('input [ { name: "a" data_type: TYPE_FP33 dims: [ 1 ] } ]', "input[0].data_type"),
    ('input [ { name: "a" data_type: TYPE_FP32 dims: [ 0 ] } ]', "input[0].dims"),
    ('input [ { data_type: TYPE_FP32 dims: [ 1 ] } ]', "input[0].name"),
    ('output [ { name: "a" dims: [ 1 ] } ]', "output[0].data_type"),
    ('name: "other"', "name"),
    ("instance_group [ { kind: KIND_TPU } ]", "instance_group[0].kind"),
    ("instance_group [ { count: 0 } ]", "instance_group[0].count"),
    ("version_policy: { latest { num_versions: 0 } }", "version_policy[0].latest.num_versions"),
    ("dynamic_batching { max_queue_delay_microseconds: -5 }", "dynamic_batching[0].max_queue_delay_microseconds"),
    ('input [ { name: "a" data_type: TYPE_FP32 dims: [1] }, { name: "a" data_type: TYPE_FP32 dims: [1] } ]', "input"),
])
def test_invalid_fields_name_file_and_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "m/config.pbtxt", "m")
    assert str(info.value).startswith(f"m/config.pbtxt: {field}"), str(info.value)


@pytest.mark.parametrize("text", ['name: "m', "input [ { name: ", "max_batch_size: 4 }", "a: @"])
def test_malformed_text_is_a_config_error_with_a_line(text: str) -> None:
    with pytest.raises(ConfigError, match="config.pbtxt"):
        parse_text_message(text, "m/config.pbtxt")


def test_text_format_details() -> None:
    message = parse_text_message("a: 'x' \"y\"\nb < c: 1.5e2 d: 0x10 e: true >\nf: [ ]; g: -3")
    assert message == {"a": ["xy"], "b": [{"c": [150.0], "d": [16], "e": [True]}], "f": [], "g": [-3]}
