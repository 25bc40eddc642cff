"""The contract every framework backend fulfils, and the helpers they share.

A backend sees stacked batches of numpy arrays, never requests: batching, validation and protocol
work happen once, in the deployments. Constructing one is cheap; ``load`` does the work and raises
``BackendLoadError`` naming the file, so a broken version fails before it can take traffic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from backends.errors import BackendLoadError, InferenceFailed, InvalidRequest
from backends.model_config import ModelConfig
from backends.signature import ModelSignature

__all__ = ["Backend", "resolve_model_path"]


def resolve_model_path(config: ModelConfig, version_dir: Path, defaults: tuple[str, ...]) -> Path:
    """The model file (or folder) inside a version folder.

    ``default_model_filename`` wins; otherwise the first of ``defaults`` that exists. ``"."`` in
    ``defaults`` stands for the version folder itself (TF Serving's layout).

    Raises:
        BackendLoadError: nothing to load; the message lists what was looked for.
    """
    names = (config.default_model_filename,) if config.default_model_filename else defaults
    for name in names:
        candidate = version_dir / name
        if name == "." and (version_dir / "saved_model.pb").exists():
            return version_dir
        if name != "." and candidate.exists():
            return candidate
    looked = ", ".join(n for n in names if n != ".")
    raise BackendLoadError(f"{config.name}: no model file in {version_dir} (looked for {looked})")


class Backend(ABC):
    """One model version loaded by one framework on one device."""

    #: File names looked for in a version folder, in order.
    default_filenames: tuple[str, ...] = ()
    #: True: the deployment hands whole requests to ``execute_requests`` (Triton's Python backend),
    #: not stacked batches to ``predict``.
    handles_requests: bool = False

    def __init__(self, config: ModelConfig, version_dir: Path, device: str = "cpu", threads: int = 1) -> None:
        self.config = config
        # Intra-op threads: the CPUs the replica holds (passed by the deployment), so several
        # replicas on a small machine do not fight over the same cores.
        self.threads = max(1, int(threads))
        self.version_dir = Path(version_dir)
        self.device = device
        self._signature: ModelSignature | None = config.signature()

    @property
    def model_path(self) -> Path:
        """Where this version's model file lives."""
        return resolve_model_path(self.config, self.version_dir, self.default_filenames)

    @property
    def signature(self) -> ModelSignature:
        """Inputs and outputs: from the config when it declares them, else from the model."""
        if self._signature is None:
            raise BackendLoadError(f"{self.config.name}: signature unknown before load()")
        return self._signature

    @property
    def max_batch_size(self) -> int:
        """Rows per request at most (0: no batch dimension); the config's unless the model sets it."""
        return self.config.max_batch_size

    @abstractmethod
    def load(self) -> None:
        """Read the model and make it ready to run; sets the signature if the config had none."""

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the framework on model-shaped inputs; return every output by name."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one stacked batch: apply config reshapes both ways and wrap framework errors.

        Raises:
            InferenceFailed: the framework raised; the message names the model.
        """
        model_inputs = {name: self._to_model_shape(name, array) for name, array in inputs.items()}
        try:
            outputs = self._run(model_inputs)
        except Exception as exc:  # noqa: BLE001 - any framework error becomes one typed error
            raise InferenceFailed(f"model {self.config.name!r} failed: {type(exc).__name__}: {exc}") from exc
        return {name: self._to_client_shape(name, array) for name, array in outputs.items()}

    def other_signatures(self) -> dict[str, ModelSignature]:
        """Signatures beside the served one (a SavedModel's ``classify``, ``regress``...), by name;
        none for most frameworks."""
        return {}

    def run_signature(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one of ``other_signatures`` on these inputs (one request, not batched).

        Raises:
            InvalidRequest: the model has no such signature.
            InferenceFailed: the framework raised.
        """
        raise InvalidRequest(f"model {self.config.name!r} has no signature {name!r}")

    def unload(self) -> None:
        """Free the model; safe to call twice."""

    def _to_model_shape(self, name: str, array: np.ndarray) -> np.ndarray:
        tensor = next((t for t in self.config.inputs if t.name == name), None)
        if tensor is None or tensor.reshape is None:
            return array
        lead = array.shape[:1] if self.config.batching else ()
        return array.reshape(lead + tensor.reshape)

    def _to_client_shape(self, name: str, array: np.ndarray) -> np.ndarray:
        tensor = next((t for t in self.config.outputs if t.name == name), None)
        if tensor is None or tensor.reshape is None:
            return array
        lead = array.shape[:1] if self.config.batching else ()
        return array.reshape(lead + tensor.dims)
