"""Triton's Python backend without Ray: model files loaded by the backend, ``pb_utils`` helpers,
``auto_complete_config``, and the errors a broken model file gets."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from backends.errors import BackendLoadError, InferenceFailed, InvalidRequest, ModelNotReady
from backends.registry import create_backend
from backends.triton_python import utils as pb_utils
from deployments.repository.config import load_config_file

MODELS = Path(__file__).parents[1] / "integration" / "python_models"


def _model(tmp_path: Path, config: str, code: str, name: str = "m"):
    (tmp_path / name / "1").mkdir(parents=True)
    (tmp_path / name / "config.pbtxt").write_text(config)
    (tmp_path / name / "1" / "model.py").write_text(code)
    backend = create_backend(load_config_file(tmp_path / name), tmp_path / name / "1")
    return backend


def test_backend_python_without_a_pipeline_is_tritons_python_backend() -> None:
    assert load_config_file(MODELS / "py_add_sub").platform == "triton_python"
    assert not load_config_file(MODELS / "py_add_sub").composite


def test_execute_answers_each_request_or_its_error() -> None:
    backend = create_backend(load_config_file(MODELS / "py_fails"), MODELS / "py_fails" / "1")
    backend.load()
    results = backend.execute_requests([{"X": np.array([[1]], np.int32)}, {"X": np.array([[-1]], np.int32)}])
    assert results[0]["Y"].tolist() == [[2]]
    assert isinstance(results[1], InvalidRequest) and "X must be >= 0" in str(results[1])
    with pytest.raises(InferenceFailed, match="13 is unlucky"):
        backend.execute_requests([{"X": np.array([[13]], np.int32)}])


def test_async_execute_and_bls_through_the_installed_hook() -> None:
    calls = []

    def hook(model, inputs, version, timeout_s) -> Future:
        calls.append(model)
        future: Future = Future()
        if model == "credit_score":
            future.set_exception(ModelNotReady("model 'credit_score' is not served"))
        else:
            future.set_result({"fraud_probability": np.full((1, 1), 0.25, np.float32)})
        return future

    backend = create_backend(load_config_file(MODELS / "py_bls"), MODELS / "py_bls" / "1")
    backend.load()
    pb_utils.connect_bls(hook)
    try:
        [result] = backend.execute_requests([{"features": np.zeros((1, 16), np.float32),
                                              "applicant": np.zeros((1, 8), np.float32)}])
    finally:
        pb_utils.connect_bls(None)
    assert sorted(calls) == ["credit_score", "fraud"]
    assert isinstance(result, ModelNotReady) and "not served" in str(result)  # the BLS error, code UNAVAILABLE


def test_auto_complete_config_supplies_the_signature(tmp_path: Path) -> None:
    code = """
import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.set_max_batch_size(4)
        config.add_input({"name": "IN", "data_type": "TYPE_INT64", "dims": [2]})
        config.add_output({"name": "OUT", "data_type": "TYPE_INT64", "dims": [2]})
        config.set_dynamic_batching()
        return config
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                .as_numpy() * 3)]) for r in requests]
"""
    backend = _model(tmp_path, 'backend: "python"', code)
    backend.load()
    assert [(s.name, s.datatype, s.shape) for s in backend.signature.inputs] == [("IN", "INT64", (-1, 2))]
    assert backend.max_batch_size == 4 and "dynamic_batching" in backend.model_config
    assert backend.predict({"IN": np.ones((1, 2), np.int64)})["OUT"].tolist() == [[3, 3]]


@pytest.mark.parametrize(("code", "message"), [
    ("class Other: pass\n", "defines no class TritonPythonModel"),
    ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
    ("class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('no GPU')\n",
     "initialize failed: RuntimeError: no GPU"),
    ("class TritonPythonModel:\n    pass\n", "declares its input and output"),
])
def test_a_broken_model_file_fails_its_load_with_the_reason(tmp_path: Path, code: str, message: str) -> None:
    config = 'backend: "python"' if "pass\n" in code and "Other" not in code else \
        'backend: "python" input [{name: "I" data_type: TYPE_FP32 dims: [1]}] ' \
        'output [{name: "O" data_type: TYPE_FP32 dims: [1]}]'
    with pytest.raises(BackendLoadError, match=message):
        _model(tmp_path, config, code).load()


def test_execute_must_answer_once_per_request(tmp_path: Path) -> None:
    config = 'backend: "python" input [{name: "I" data_type: TYPE_FP32 dims: [1]}] ' \
             'output [{name: "O" data_type: TYPE_FP32 dims: [1]}]'
    code = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    backend = _model(tmp_path, config, code)
    backend.load()
    with pytest.raises(InferenceFailed, match="returned 0 responses for 1 requests"):
        backend.execute_requests([{"I": np.zeros(1, np.float32)}])


def test_pb_utils_helpers_follow_triton() -> None:
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.numpy_to_triton_type(np.float32) == 11 and pb_utils.triton_to_numpy_type(13) is np.object_
    config = json.loads(json.dumps({"input": [{"name": "a", "data_type": "TYPE_FP32", "dims": [1]}],
                                    "model_transaction_policy": {"decoupled": True}}))
    assert pb_utils.get_input_config_by_name(config, "a")["data_type"] == "TYPE_FP32"
    assert pb_utils.get_output_config_by_name(config, "a") is None
    assert pb_utils.using_decoupled_model_transaction_policy(config)
    text = pb_utils.Tensor("s", np.array(["ab", "c"]))
    assert text.as_numpy().dtype == object and text.as_numpy().tolist() == [b"ab", b"c"]
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    again = pb_utils.Tensor.from_dlpack("x", pb_utils.Tensor("x", array).to_dlpack())
    np.testing.assert_array_equal(again.as_numpy(), array)
    error = pb_utils.TritonError("nope", pb_utils.TritonError.NOT_FOUND)
    assert error.message() == "nope" and error.code() == pb_utils.TritonError.NOT_FOUND
    with pytest.raises(ValueError, match="contradicts"):
        pb_utils.ModelConfig({"max_batch_size": 8}).set_max_batch_size(4)


def test_model_warmup_samples_as_triton_builds_them(tmp_path: Path) -> None:
    from backends.warmup import warmup_samples

    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "raw").write_bytes(np.array([1.5, 2.5], np.float32).tobytes())
    config = {"max_batch_size": 8, "model_warmup": [
        {"name": "a", "batch_size": 3, "count": 2, "inputs": {
            "z": {"data_type": "TYPE_INT64", "dims": [2], "zero_data": True},
            "r": {"data_type": "TYPE_FP32", "dims": [4], "random_data": True}}},
        {"inputs": {"f": {"data_type": "TYPE_FP32", "dims": [2], "input_data_file": "raw"}}}]}
    first, second = warmup_samples(config, tmp_path)
    assert first.name == "a" and first.count == 2 and first.inputs["z"].shape == (3, 2)
    assert not first.inputs["z"].any() and first.inputs["r"].dtype == np.float32 and first.inputs["r"].shape == (3, 4)
    assert second.name == "model_warmup[1]" and second.count == 1
    assert second.inputs["f"].tolist() == [[1.5, 2.5]]
    with pytest.raises(BackendLoadError, match="model_warmup 'b': cannot build its inputs"):
        warmup_samples({"model_warmup": [{"name": "b", "inputs": {"f": {"dims": [1], "input_data_file": "none"}}}]},
                       tmp_path)
