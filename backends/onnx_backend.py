"""ONNX Runtime backend: CUDA (or TensorRT) provider on a GPU replica, the CPU provider otherwise."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from backends.base import Backend
from backends.errors import BackendLoadError
from backends.signature import ModelSignature, TensorSpec

__all__ = ["OnnxBackend"]

logger = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _spec(node: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (node.shape or []))
    return TensorSpec(node.name, _ORT_TYPES.get(node.type, node.type), shape)


class OnnxBackend(Backend):
    """Runs ``model.onnx`` in one InferenceSession with intra-op threads bound to the actor's CPUs."""

    default_filenames = ("model.onnx",)

    def _providers(self) -> list:
        available = ort.get_available_providers()
        wanted: list = []
        if self.device.startswith("cuda"):
            device_id = int(self.device.partition(":")[2] or 0)
            if self.config.flag("tensorrt") and "TensorrtExecutionProvider" in available:
                wanted.append(("TensorrtExecutionProvider", {"device_id": device_id,
                                                             "trt_fp16_enable": self.config.flag("half")}))
            if "CUDAExecutionProvider" in available:
                wanted.append(("CUDAExecutionProvider", {"device_id": device_id}))
            else:
                logger.warning("%s: CUDA provider unavailable (%s); running on CPU", self.config.name, available)
        wanted.append("CPUExecutionProvider")
        return wanted

    def load(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        path = self.model_path
        try:
            self._session = ort.InferenceSession(str(path), options, providers=self._providers())
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise BackendLoadError(f"{self.config.name}: cannot load {path}: {exc}") from exc
        self._output_names = [node.name for node in self._session.get_outputs()]
        if self._signature is None:
            self._signature = ModelSignature(
                inputs=tuple(_spec(n) for n in self._session.get_inputs()),
                outputs=tuple(_spec(n) for n in self._session.get_outputs()),
            )

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: (a.astype(str) if a.dtype == np.object_ else a) for name, a in inputs.items()}
        results = self._session.run(self._output_names, feed)
        return {name: np.asarray(r) for name, r in zip(self._output_names, results)}

    def unload(self) -> None:
        self._session = None
