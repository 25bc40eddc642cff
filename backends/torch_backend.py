"""PyTorch backend: TorchScript (``model.pt``) and torch.export programs (``model.pt2``).

Runs under ``inference_mode`` on the replica's device; ``parameters { key: "half" ... "true" }``
runs the model in fp16 and hands outputs back in the datatype the config declares. TorchScript
carries no tensor names or types, so a PyTorch model needs ``input``/``output`` in its config
(inputs are passed positionally in config order, outputs matched in order), as in Triton.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from backends.base import Backend
from backends.dtypes import is_bfloat16, v2_to_numpy
from backends.errors import BackendLoadError

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """One TorchScript module or exported program on one device."""

    default_filenames = ("model.pt", "model.pt2")

    def load(self) -> None:
        if self._signature is None:
            raise BackendLoadError(
                f"{self.config.name}: a PyTorch model needs input and output entries in config.pbtxt")
        torch.set_num_threads(self.threads)
        self._device = torch.device(self.device)
        self._half = self.config.flag("half") and self._device.type == "cuda"  # fp16 only pays on a GPU
        path = self.model_path
        try:
            if path.suffix == ".pt2":
                module = torch.export.load(str(path)).module().to(self._device)
            else:
                module = torch.jit.load(str(path), map_location=self._device).eval()
            self._module = module.half() if self._half else module
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, ValueError, pickle errors...
            raise BackendLoadError(f"{self.config.name}: cannot load {path}: {exc}") from exc

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        if not array.flags.writeable:
            array = array.copy()
        if is_bfloat16(array.dtype):  # torch cannot read numpy's bfloat16: the same 2 bytes, viewed
            tensor = torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        tensor = tensor.to(self._device, non_blocking=True)
        return tensor.half() if self._half and tensor.is_floating_point() else tensor

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            args = [self._tensor(inputs[spec.name]) for spec in self.signature.inputs]
            result = self._module(*args)
        if isinstance(result, dict):
            values = [result[spec.name] for spec in self.signature.outputs]
        else:
            values = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(values) != len(self.signature.outputs):
            raise ValueError(f"model returned {len(values)} outputs, config declares {len(self.signature.outputs)}")
        return {spec.name: _to_numpy(value, spec.datatype) for spec, value in zip(self.signature.outputs, values)}

    def unload(self) -> None:
        self._module = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _to_numpy(value: torch.Tensor, datatype: str) -> np.ndarray:
    """An output as the declared v2 type (bfloat16 through its bytes: numpy cannot take torch's)."""
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        return value.view(torch.int16).numpy().view(v2_to_numpy("BF16")).astype(v2_to_numpy(datatype), copy=False)
    return value.numpy().astype(v2_to_numpy(datatype), copy=False)
