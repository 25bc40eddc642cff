"""Each backend loads its example model and matches the framework's own output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.errors import BackendLoadError, InferenceFailed
from backends.registry import create_backend
from deployments.repository.scan import scan_model


def backend_for(repository: Path, model: str):
    entry = scan_model(repository / model)
    backend = create_backend(entry.config, entry.versions[1])
    backend.load()
    return backend


def test_onnx_matches_onnxruntime(example_repository: Path) -> None:
    import onnxruntime as ort

    backend = backend_for(example_repository, "fraud")
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    direct = ort.InferenceSession(str(example_repository / "fraud/1/model.onnx")).run(None, {"features": x})[0]
    np.testing.assert_allclose(backend.predict({"features": x})["fraud_probability"], direct, rtol=1e-6)
    assert 0 < direct.min() and direct.max() < 1


def test_tensorflow_matches_savedmodel(example_repository: Path) -> None:
    import tensorflow as tf

    backend = backend_for(example_repository, "credit_score")
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    loaded = tf.saved_model.load(str(example_repository / "credit_score/1/model.savedmodel"))
    direct = loaded.signatures["serving_default"](applicant=tf.constant(x))["credit_score"].numpy()
    np.testing.assert_allclose(backend.predict({"applicant": x})["credit_score"], direct, rtol=1e-5)
    assert [s.name for s in backend.signature.inputs] == ["applicant"]


def test_torchscript_matches_torch(example_repository: Path) -> None:
    import torch

    backend = backend_for(example_repository, "resnet50")
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    module = torch.jit.load(str(example_repository / "resnet50/1/model.pt")).eval()
    with torch.inference_mode():
        direct = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.predict({"image": x})["logits"], direct, rtol=1e-4, atol=1e-5)


def test_torch_export_program(tmp_path: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    program = torch.export.export(model, (torch.zeros(2, 3),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    (tmp_path / "lin" / "1").mkdir(parents=True)
    torch.export.save(program, str(tmp_path / "lin" / "1" / "model.pt2"))
    (tmp_path / "lin" / "config.pbtxt").write_text(
        'backend: "pytorch" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]')
    backend = backend_for(tmp_path, "lin")
    x = np.ones((3, 3), np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.predict({"x": x})["y"], expected, rtol=1e-6)


def test_torchscript_bf16_in_and_out(tmp_path: Path) -> None:
    """BF16 tensors reach torch as torch.bfloat16 and come back as ml_dtypes.bfloat16."""
    import ml_dtypes
    import torch

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.dtype == torch.bfloat16
            return x * 2

    (tmp_path / "half" / "1").mkdir(parents=True)
    torch.jit.script(Double()).save(str(tmp_path / "half" / "1" / "model.pt"))
    (tmp_path / "half" / "config.pbtxt").write_text(
        'backend: "pytorch" max_batch_size: 4 input [ { name: "x" data_type: TYPE_BF16 dims: [ 2 ] } ] '
        'output [ { name: "y" data_type: TYPE_BF16 dims: [ 2 ] } ]')
    x = np.array([[1.5, -3.0]], dtype=ml_dtypes.bfloat16)
    y = backend_for(tmp_path, "half").predict({"x": x})["y"]
    assert y.dtype == ml_dtypes.bfloat16 and y.astype(np.float32).tolist() == [[3.0, -6.0]]


def test_corrupt_file_is_a_load_error_naming_the_model(tmp_path: Path) -> None:
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendLoadError, match="bad: cannot load"):
        backend_for(tmp_path, "bad")


def test_runtime_failure_is_inference_failed(example_repository: Path) -> None:
    backend = backend_for(example_repository, "fraud")
    with pytest.raises(InferenceFailed, match="model 'fraud' failed"):
        backend.predict({"features": np.zeros((1, 5), np.float32)})
