"""Backends on a CUDA device: placement, fp16 and agreement with CPU results. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.registry import create_backend
from deployments.repository.scan import scan_model

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def loaded(repository: Path, model: str, device: str):
    entry = scan_model(repository / model)
    backend = create_backend(entry.config, entry.versions[1], device)
    backend.load()
    return backend


def test_resnet50_fp16_on_gpu_matches_cpu(example_repository: Path) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    gpu = loaded(example_repository, "resnet50", "cuda:0")
    assert gpu._half and next(gpu._module.parameters()).device.type == "cuda"
    cpu = loaded(example_repository, "resnet50", "cpu")
    got, expected = gpu.predict({"image": x})["logits"], cpu.predict({"image": x})["logits"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=5e-2 * np.abs(expected).max())


def test_onnx_uses_the_cuda_provider_when_present(example_repository: Path) -> None:
    import onnxruntime as ort

    backend = loaded(example_repository, "fraud", "cuda:0")
    providers = backend._session.get_providers()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers[0] == "CUDAExecutionProvider"
    x = np.ones((8, 16), np.float32)
    cpu = loaded(example_repository, "fraud", "cpu")
    np.testing.assert_allclose(backend.predict({"features": x})["fraud_probability"],
                               cpu.predict({"features": x})["fraud_probability"], rtol=1e-4)


def test_gpu_samples_report_memory_and_fragmentation(example_repository: Path) -> None:
    from backends.gpu import gpu_samples

    backend = loaded(example_repository, "resnet50", "cuda:0")
    backend.predict({"image": np.zeros((2, 3, 224, 224), np.float32)})
    from backends.gpu import gpu_uuid

    assert gpu_uuid("cuda:0").startswith("GPU-")  # Triton's gpu_uuid label
    samples = gpu_samples("cuda:0")
    assert 0 < samples["infergrid_gpu_memory_used_bytes"] <= samples["infergrid_gpu_memory_total_bytes"]
    assert 0.0 <= samples["infergrid_gpu_memory_fragmentation"] < 1.0
