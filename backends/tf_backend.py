"""TensorFlow backend: a SavedModel's serving signature (its others on request: TF Serving's classify and
regress), with GPU memory growth on.

Memory growth is set before anything touches the GPU so TensorFlow never claims the whole card
(other replicas share it). Inputs and outputs come from the signature when the config is silent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from backends.base import Backend
from backends.dtypes import numpy_to_v2
from backends.errors import BackendLoadError, InferenceFailed, InvalidRequest
from backends.signature import ModelSignature, TensorSpec

__all__ = ["TensorFlowBackend"]

logger = logging.getLogger(__name__)


def _configure_runtime(threads: int) -> None:
    """Thread pools and GPU memory growth; TF allows these only before its runtime starts."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        logger.debug("TensorFlow runtime already initialised; thread settings unchanged")


def _spec(name: str, tensor_spec: tf.TensorSpec) -> TensorSpec:
    datatype = "BYTES" if tensor_spec.dtype == tf.string else numpy_to_v2(tensor_spec.dtype.as_numpy_dtype)
    shape = tuple(-1 if d is None else int(d) for d in tensor_spec.shape.as_list())
    return TensorSpec(name, datatype, shape)


def _signature_of(function) -> ModelSignature:
    _, input_specs = function.structured_input_signature
    return ModelSignature(inputs=tuple(_spec(n, s) for n, s in sorted(input_specs.items())),
                          outputs=tuple(_spec(n, s) for n, s in sorted(function.structured_outputs.items())))


def _call(function, device: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One concrete function on named arrays, each fed in the dtype the function declares."""
    _, specs = function.structured_input_signature
    with tf.device(device):
        feed = {name: tf.constant(array, dtype=specs[name].dtype if name in specs else None)
                for name, array in inputs.items()}
        outputs = function(**feed)
    return {name: value.numpy() for name, value in outputs.items()}


class TensorFlowBackend(Backend):
    """Calls one concrete function of a SavedModel (``serving_default`` unless configured)."""

    default_filenames = ("model.savedmodel", ".")

    def load(self) -> None:
        _configure_runtime(self.threads)
        path = self.model_path
        signature_name = self.config.parameter("signature_name", "serving_default")
        self._tf_device = "/GPU:" + (self.device.partition(":")[2] or "0") if self.device.startswith("cuda") else "/CPU:0"
        try:
            with tf.device(self._tf_device):
                self._loaded = tf.saved_model.load(str(path))
            self._function = self._loaded.signatures[signature_name]
        except KeyError as exc:
            raise BackendLoadError(f"{self.config.name}: {path} has no signature {signature_name!r}") from exc
        except Exception as exc:  # noqa: BLE001 - TF raises many error types on bad files
            raise BackendLoadError(f"{self.config.name}: cannot load {path}: {exc}") from exc
        if self._signature is None:
            self._signature = _signature_of(self._function)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _call(self._function, self._tf_device, inputs)

    def other_signatures(self) -> dict[str, ModelSignature]:
        """Every signature of the SavedModel but the served one (TF Serving's classify and regress)."""
        served = self.config.parameter("signature_name", "serving_default")
        return {name: _signature_of(function) for name, function in self._loaded.signatures.items() if name != served}

    def run_signature(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        function = self._loaded.signatures.get(name) if self._loaded is not None else None
        if function is None:
            raise InvalidRequest(f"model {self.config.name!r} has no signature {name!r}")
        try:
            return _call(function, self._tf_device, inputs)
        except tf.errors.InvalidArgumentError as exc:  # the request's examples do not parse as the model reads them
            raise InvalidRequest(f"model {self.config.name!r} signature {name!r}: {exc.message}") from exc
        except Exception as exc:  # noqa: BLE001 - any framework error becomes one typed error
            raise InferenceFailed(f"model {self.config.name!r} signature {name!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc

    def unload(self) -> None:
        self._function = None
        self._loaded = None
