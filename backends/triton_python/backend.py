"""Triton's Python backend: load ``<version>/model.py``, call ``TritonPythonModel`` as Triton does.

Unlike the framework backends this one sees requests, not a stacked batch: ``execute(requests)``
receives the list the dynamic batcher gathered and returns one response each, so a model can fail
one request of a batch (``InferenceResponse(error=...)``) and answer the others. An ``async def
execute`` runs on an event loop of the backend's own, so its BLS calls (``async_exec``) overlap.
Trust model as Triton's: the repository's code is trusted; it runs inside the replica.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend
from backends.dtypes import config_to_v2
from backends.errors import (
    BackendLoadError,
    InferenceFailed,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    ServingError,
)
from backends.signature import ModelSignature, TensorSpec
from backends.triton_python import utils

__all__ = ["TritonPythonBackend", "error_of_response"]

MODULE_ALIAS = "triton_python_backend_utils"


def error_of_response(error: utils.TritonError) -> ServingError:
    """A response's ``TritonError`` as the data plane's error (its status, as Triton's HTTP maps the code)."""
    cls = {utils.TritonError.INVALID_ARG: InvalidRequest, utils.TritonError.UNSUPPORTED: InvalidRequest,
           utils.TritonError.NOT_FOUND: ModelNotFound, utils.TritonError.UNAVAILABLE: ModelNotReady}
    return cls.get(error.code(), InferenceFailed)(error.message())


def _signature(config: Mapping) -> ModelSignature | None:
    """Inputs and outputs of a (completed) Triton JSON config; None when it declares none."""
    lead = (-1,) if int(config.get("max_batch_size", 0)) > 0 else ()

    def specs(kind: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t["name"], config_to_v2(t.get("data_type", "TYPE_FP32")),
                                lead + tuple(int(d) for d in t.get("dims", ()))) for t in config.get(kind, ()))
    inputs, outputs = specs("input"), specs("output")
    return ModelSignature(inputs, outputs) if inputs and outputs else None


class TritonPythonBackend(Backend):
    """One version of a Triton Python model in one replica (one Triton model instance)."""

    default_filenames = ("model.py",)
    handles_requests = True

    def __init__(self, config, version_dir: Path, device: str = "cpu", threads: int = 1) -> None:
        super().__init__(config, version_dir, device, threads)
        self._model: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finalized = False
        self.version = int(self.version_dir.name) if self.version_dir.name.isdigit() else 1
        self.model_config: dict = {}
        self.instance_name = f"{config.name}_0_0"  # the deployment sets the replica's index

    def _initial_config(self) -> dict:
        """The config as Triton hands it to the model: the file's fields, name and backend filled in."""
        config = json.loads(json.dumps(self.config.triton))
        config["name"], config["backend"] = self.config.name, "python"
        config.setdefault("max_batch_size", self.config.max_batch_size)
        config.setdefault("input", [])
        config.setdefault("output", [])
        return config

    def load(self) -> None:
        sys.modules.setdefault(MODULE_ALIAS, utils)
        path = self.model_path
        cls = getattr(self._import(path), "TritonPythonModel", None)
        if not isinstance(cls, type):
            raise BackendLoadError(f"{self.config.name}: {path} defines no class TritonPythonModel")
        config = self._initial_config()
        if hasattr(cls, "auto_complete_config"):
            try:
                config = cls.auto_complete_config(utils.ModelConfig(config)).as_dict()
            except Exception as exc:  # noqa: BLE001 - the model's own code: any error fails the load
                raise BackendLoadError(f"{self.config.name}: auto_complete_config failed: {exc}") from exc
        self.model_config = config
        self._signature = self._signature or _signature(config)
        if self._signature is None:
            raise BackendLoadError(f"{self.config.name}: a Python model declares its input and output, in "
                                   f"config.pbtxt or with auto_complete_config")
        self._model = cls()
        if hasattr(self._model, "initialize"):
            try:
                self._model.initialize(self.initialize_args())
            except Exception as exc:  # noqa: BLE001
                raise BackendLoadError(f"{self.config.name}: initialize failed: {type(exc).__name__}: {exc}") from exc

    def _import(self, path: Path) -> Any:
        """Import model.py under a name of its own, with its folder importable (for its helper modules)."""
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(f"triton_model_{self.config.name}_{self.version}", path)
        if spec is None or spec.loader is None:
            raise BackendLoadError(f"{self.config.name}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - a syntax or import error in the repository's code
            raise BackendLoadError(f"{self.config.name}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
        return module

    def initialize_args(self) -> dict[str, str]:
        """``initialize(args)``: the keys Triton passes, all strings."""
        on_gpu = self.device.startswith("cuda")
        return {
            "model_config": json.dumps(self.model_config),
            "model_instance_kind": "GPU" if on_gpu else "CPU",
            "model_instance_name": self.instance_name,
            "model_instance_device_id": self.device.partition(":")[2] or "0",
            "model_repository": str(self.version_dir.parent.resolve()),
            "model_version": str(self.version),
            "model_name": self.config.name,
        }

    @property
    def max_batch_size(self) -> int:
        """After ``auto_complete_config``, which may set it."""
        return int(self.model_config.get("max_batch_size", self.config.max_batch_size))

    def execute_requests(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | ServingError]:
        """Run ``execute`` on the requests of one batch: per request its outputs, or its error.

        Raises:
            InferenceFailed: ``execute`` raised, or answered with the wrong number of responses;
                every request of the batch fails.
        """
        outputs = [t.name for t in self.signature.outputs]
        requests = [utils.InferenceRequest(model_name=self.config.name, requested_output_names=outputs,
                                           inputs=[utils.Tensor(name, array) for name, array in r.items()])
                    for r in batch]
        try:
            responses = self._model.execute(requests)
            if inspect.isawaitable(responses):
                responses = self._event_loop().run_until_complete(responses)
        except Exception as exc:  # noqa: BLE001 - TritonModelException or any other: the batch fails
            raise InferenceFailed(f"model {self.config.name!r}: execute failed: {exc}") from exc
        if not isinstance(responses, list | tuple) or len(responses) != len(requests):
            count = len(responses) if isinstance(responses, list | tuple) else type(responses).__name__
            raise InferenceFailed(f"model {self.config.name!r}: execute returned {count} responses for "
                                  f"{len(requests)} requests (one InferenceResponse per request)")
        return [self._outputs(response) for response in responses]

    def _outputs(self, response: Any) -> dict[str, np.ndarray] | ServingError:
        if not isinstance(response, utils.InferenceResponse):
            return InferenceFailed(f"model {self.config.name!r}: execute returned {type(response).__name__}, "
                                   f"not an InferenceResponse")
        if response.has_error():
            return error_of_response(response.error())
        declared = {t.name for t in self.signature.outputs}
        outputs = {t.name(): t.as_numpy() for t in response.output_tensors()}
        unknown = sorted(set(outputs) - declared)
        if unknown:
            return InferenceFailed(f"model {self.config.name!r}: output {unknown[0]!r} is not in its config "
                                   f"(outputs: {', '.join(sorted(declared))})")
        return outputs

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop ``async def execute`` runs on: this backend's own, on the replica's worker thread."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request alone (a warm-up): its error raised."""
        result = self.execute_requests([dict(inputs)])[0]
        if isinstance(result, ServingError):
            raise result
        return result

    def unload(self) -> None:
        """``finalize()`` once, then close the loop."""
        if self._model is not None and not self._finalized and hasattr(self._model, "finalize"):
            self._finalized = True
            try:
                self._model.finalize()
            except Exception:  # noqa: BLE001 - unloading goes on regardless
                pass
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
