"""Framework backends: load a model version, run stacked numpy batches. No Ray in here.

Frameworks are imported only inside their own module (``onnx_backend``, ``torch_backend``,
``tf_backend``), reached through ``registry.create_backend``.
"""

from backends.base import Backend
from backends.errors import ServingError
from backends.model_config import ModelConfig
from backends.registry import create_backend, detect_platform
from backends.signature import ModelSignature, TensorSpec

__all__ = ["Backend", "ModelConfig", "ModelSignature", "ServingError", "TensorSpec", "create_backend",
           "detect_platform"]
