"""The parsed form of a model's config.pbtxt: frozen, validated, framework-free.

Parsing lives in ``deployments.repository``; backends only read these objects. Field names follow
Triton's ModelConfig protobuf so that a reader of config.pbtxt recognises every one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.signature import ModelSignature, TensorSpec

__all__ = [
    "PLATFORMS",
    "TensorConfig",
    "DynamicBatching",
    "InstanceGroup",
    "VersionPolicy",
    "ModelConfig",
    "TRITON_PLATFORM_NAMES",
    "TRITON_PYTHON",
    "COMPOSITE_PLATFORMS",
    "EnsembleStep",
]

# Triton platform/backend spellings -> the backend that serves them.
PLATFORMS: dict[str, str] = {
    "onnxruntime_onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "pytorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow": "tensorflow",
    "ensemble": "ensemble",
    "python": "python",
    "torchserve": "torchserve",  # an unpacked .mar: its handler run by TorchServe's ts package
}
# ``backend: "python"`` is infergrid's Pipeline when its parameters name one (``pipeline``), else
# Triton's Python backend: a model whose version folders hold a ``model.py``.
TRITON_PYTHON = "triton_python"
# Platforms whose "model" is a composition of other models (no model files of their own).
COMPOSITE_PLATFORMS = frozenset({"ensemble", "python"})


@dataclass(frozen=True)
class TensorConfig:
    """One ``input``/``output`` entry: dims exclude the batch dimension when batching is on."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DynamicBatching:
    """``dynamic_batching { preferred_batch_size, max_queue_delay_microseconds,
    default_queue_policy { max_queue_size } }``; a max_queue_size of 0 leaves the queue unbounded."""

    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 0
    default_timeout_microseconds: int = 0  # 0: no timeout


@dataclass(frozen=True)
class InstanceGroup:
    """``instance_group { count, kind, gpus }``; kind is KIND_AUTO, KIND_GPU or KIND_CPU."""

    count: int = 1
    kind: str = "KIND_AUTO"
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class VersionPolicy:
    """``version_policy``: ``latest {num_versions}`` (default 1), ``all {}`` or ``specific {versions}``."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of the ones on disk, newest first."""
        newest_first = sorted(available, reverse=True)
        if self.kind == "all":
            return newest_first
        if self.kind == "specific":
            return [v for v in newest_first if v in self.versions]
        return newest_first[: self.num_versions]


@dataclass(frozen=True)
class EnsembleStep:
    """One ``ensemble_scheduling.step``: run ``model_name`` on ensemble tensors.

    ``input_map`` pairs are (member input, ensemble tensor); ``output_map`` pairs are
    (member output, ensemble tensor). ``model_version`` -1 means the member's newest served version.
    """

    model_name: str
    model_version: int = -1
    input_map: tuple[tuple[str, str], ...] = ()
    output_map: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """Everything infergrid uses from a config.pbtxt (or infers for a folder without one)."""

    name: str
    platform: str
    max_batch_size: int = 0
    inputs: tuple[TensorConfig, ...] = ()
    outputs: tuple[TensorConfig, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    instance_group: tuple[InstanceGroup, ...] = ()
    version_policy: VersionPolicy = VersionPolicy()
    # TF Serving's version labels (``stable`` -> 3), from its --model_config_file; Triton has none.
    version_labels: tuple[tuple[str, int], ...] = ()
    # The model's traffic policy (``deployments.dataplane.traffic.TrafficPolicy``, from its traffic.json).
    traffic: Any = None
    # Replicas between bounds (``deployments.repository.autoscaling.AutoscalingSpec``, from ``parameters``).
    autoscaling: Any = None
    default_model_filename: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    warnings: tuple[str, ...] = ()
    # The config as parsed, in Triton's JSON mapping with the proto's field names, only the fields
    # set: the base of what ``GET /v2/models/{m}/config`` returns once completed from the model.
    triton: dict = field(default_factory=dict)

    @property
    def batching(self) -> bool:
        """True when the first dimension of every tensor is the batch dimension."""
        return self.max_batch_size > 0

    def signature(self) -> ModelSignature | None:
        """The client-facing signature, or None when the config declares no inputs or outputs."""
        if not self.inputs or not self.outputs:
            return None
        lead = (-1,) if self.batching else ()
        return ModelSignature(
            inputs=tuple(TensorSpec(t.name, t.datatype, lead + t.dims) for t in self.inputs),
            outputs=tuple(TensorSpec(t.name, t.datatype, lead + t.dims) for t in self.outputs),
        )

    @property
    def replica_count(self) -> int:
        """Replicas to run: the ``instance_group`` counts added up (one without a group)."""
        return sum(g.count for g in self.instance_group) or 1

    @property
    def most_replicas(self) -> int:
        """The most replicas a version may run: the autoscaling bound, else the fixed count."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replica_count

    @property
    def composite(self) -> bool:
        """True for ensembles and Python pipelines: models made of other models."""
        return self.platform in COMPOSITE_PLATFORMS

    def parameter(self, key: str, default: str | None = None) -> str | None:
        """A ``parameters`` value by key."""
        return self.parameters.get(key, default)

    def flag(self, key: str) -> bool:
        """A boolean ``parameters`` value ("true"/"1"/"yes")."""
        return str(self.parameters.get(key, "")).strip().lower() in ("1", "true", "yes", "on")

# What Triton reports as ``platform`` in model metadata, per backend.
TRITON_PLATFORM_NAMES: dict[str, str] = {
    "onnxruntime": "onnxruntime_onnx",
    "pytorch": "pytorch_libtorch",
    "tensorflow": "tensorflow_savedmodel",
    "ensemble": "ensemble",
    "python": "python",
    TRITON_PYTHON: "python",
}
