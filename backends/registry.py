"""Platform -> backend class, imported lazily so a missing framework fails only its own models.

Nothing here imports torch, tensorflow or onnxruntime: the table holds module paths, and the import
happens when a replica first builds a backend of that platform.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from backends.base import Backend
from backends.errors import BackendUnavailable, ConfigError
from backends.model_config import ModelConfig

__all__ = ["BACKENDS", "backend_class", "create_backend", "detect_platform", "default_filenames"]

# platform -> (module, class, pip package that provides the framework)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("backends.onnx_backend", "OnnxBackend", "onnxruntime"),
    "pytorch": ("backends.torch_backend", "TorchBackend", "torch"),
    "tensorflow": ("backends.tf_backend", "TensorFlowBackend", "tensorflow"),
    "triton_python": ("backends.triton_python.backend", "TritonPythonBackend", "numpy"),
    "torchserve": ("backends.torchserve.backend", "TorchServeBackend", "torchserve"),
}
# Kept beside the table so detection needs no framework import; each backend class repeats them.
_FILES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("model.onnx",),
    "pytorch": ("model.pt", "model.pt2"),
    "tensorflow": ("model.savedmodel", "."),
    "triton_python": ("model.py",),
    "torchserve": ("MAR-INF/MANIFEST.json",),
}


def default_filenames(platform: str) -> tuple[str, ...]:
    """File names a backend looks for in a version folder."""
    return _FILES.get(platform, ())


def detect_platform(version_dir: Path) -> str | None:
    """Guess a platform from the files in a version folder (for folders with no config)."""
    if (version_dir / "saved_model.pb").exists() or (version_dir / "model.savedmodel").is_dir():
        return "tensorflow"
    if (version_dir / "model.onnx").exists():
        return "onnxruntime"
    if (version_dir / "model.pt").exists() or (version_dir / "model.pt2").exists():
        return "pytorch"
    if (version_dir / "MAR-INF" / "MANIFEST.json").exists():  # an unpacked TorchServe archive
        return "torchserve"
    return None


def backend_class(platform: str) -> type[Backend]:
    """Import and return the backend class for a platform.

    Raises:
        ConfigError: no backend serves this platform.
        BackendUnavailable: the framework is not installed; says which package to install.
    """
    if platform not in BACKENDS:
        raise ConfigError(f"no backend for platform {platform!r}; supported: {', '.join(BACKENDS)}")
    module_name, class_name, package = BACKENDS[platform]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"platform {platform!r} needs the {package!r} package, which failed to import: {exc}; "
            f"install it with `pip install {package}`") from exc
    return getattr(module, class_name)


def create_backend(config: ModelConfig, version_dir: Path, device: str = "cpu", threads: int = 1) -> Backend:
    """Build (not load) the backend for one model version, with ``threads`` intra-op threads."""
    return backend_class(config.platform)(config, version_dir, device, threads)
