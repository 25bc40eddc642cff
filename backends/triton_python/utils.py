"""``triton_python_backend_utils`` as Triton's Python models use it, over infergrid's data plane.

A Triton ``model.py`` does ``import triton_python_backend_utils as pb_utils``; the Python backend
(``backends.triton_python.backend``) registers this module under that name before it imports the
model file. Names, signatures and behaviour follow Triton's python_backend (``pb_utils``): tensors
are numpy arrays on the CPU, BYTES tensors numpy ``object`` arrays of ``bytes``. BLS calls
(``InferenceRequest.exec``/``async_exec``) go to a served model through the hook the deployment
installs (``connect_bls``): the router of the data plane, with the target's batching and metrics.

Not provided: decoupled models (``get_response_sender``), GPU tensors (``is_cpu`` is always True)
and sequence batching flags beyond their constants.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from backends.dtypes import config_to_v2, numpy_to_v2, v2_to_numpy
from backends.errors import status_of

__all__ = [
    "Tensor", "InferenceRequest", "InferenceResponse", "TritonError", "TritonModelException", "Logger", "LogLevel",
    "ModelConfig", "get_input_tensor_by_name", "get_output_tensor_by_name", "get_input_config_by_name",
    "get_output_config_by_name", "triton_string_to_numpy", "numpy_to_triton_type", "triton_to_numpy_type",
    "using_decoupled_model_transaction_policy", "connect_bls",
]

logger = logging.getLogger("infergrid.python_model")

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

# TRITONSERVER_DataType values, in Triton's order.
_TRITON_TYPES = ("INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                 "FP16", "FP32", "FP64", "BYTES", "BF16")

# (model, {input: array}, version or None, timeout in s or None) -> outputs by name, from another thread.
BlsCall = Callable[[str, dict[str, np.ndarray], "int | None", "float | None"], Future]
_bls: BlsCall | None = None


def connect_bls(call: BlsCall | None) -> None:
    """Install how ``InferenceRequest.exec`` reaches served models (the replica's data plane)."""
    global _bls
    _bls = call


def triton_string_to_numpy(triton_type_string: str) -> type:
    """``"TYPE_FP32"`` -> ``numpy.float32``; ``TYPE_STRING`` -> ``numpy.object_``."""
    return v2_to_numpy(config_to_v2(triton_type_string)).type


def triton_to_numpy_type(data_type: int) -> type:
    """A ``TRITONSERVER_DataType`` value -> the numpy type."""
    return v2_to_numpy(_TRITON_TYPES[data_type]).type


def numpy_to_triton_type(data_type: Any) -> int | None:
    """A numpy type -> its ``TRITONSERVER_DataType`` value (None when Triton has none)."""
    try:
        return _TRITON_TYPES.index(numpy_to_v2(np.dtype(data_type)))
    except Exception:  # noqa: BLE001 - Triton answers None for types it does not know
        return None


class TritonError(Exception):
    """An error a model returns in one response (``InferenceResponse(error=...)``): that request fails."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    @classmethod
    def of_failure(cls, exc: BaseException) -> TritonError:
        """A served model's failure (a ``ServingError``) as the error a BLS response carries."""
        code = {400: cls.INVALID_ARG, 404: cls.NOT_FOUND, 503: cls.UNAVAILABLE}.get(status_of(exc), cls.INTERNAL)
        return cls(str(exc), code)


class TritonModelException(Exception):
    """Raised by a model: every request of the batch being executed fails with this message."""


class Tensor:
    """A named tensor on the CPU (numpy strings become ``object`` arrays of bytes, as Triton keeps them)."""

    def __init__(self, name: str, data: np.ndarray) -> None:
        array = np.asarray(data)
        if array.dtype.kind in "SU":
            array = np.vectorize(lambda v: v.encode() if isinstance(v, str) else bytes(v), otypes=[object])(array) \
                if array.size else array.astype(object)
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> int | None:
        return numpy_to_triton_type(self._array.dtype)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        """A DLPack capsule over the array (``torch.utils.dlpack.from_dlpack`` reads it)."""
        return self._array.__dlpack__()

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        """A tensor from a DLPack capsule or an object with ``__dlpack__`` (a CPU torch tensor)."""
        if hasattr(capsule, "__dlpack__"):
            return Tensor(name, np.from_dlpack(capsule))
        return Tensor(name, np.from_dlpack(_Capsule(capsule)))

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={self.shape()}, dtype={self._array.dtype})"


class _Capsule:
    """A bare DLPack capsule dressed as the object ``numpy.from_dlpack`` expects (CPU memory)."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, **_: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


class InferenceResponse:
    """What ``execute`` returns per request, and what a BLS call answers."""

    def __init__(self, output_tensors: Iterable[Tensor] = (), error: TritonError | None = None,
                 parameters: Mapping[str, Any] | str | None = None) -> None:
        self._outputs, self._error = list(output_tensors), error
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(dict(parameters or {}))

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


class InferenceRequest:
    """One request: handed to ``execute``, or built by the model for a BLS call to another model."""

    def __init__(self, *, model_name: str = "", inputs: Iterable[Tensor] = (),
                 requested_output_names: Iterable[str] = (), request_id: str = "", correlation_id: int | str = 0,
                 model_version: int = -1, flags: int = 0, timeout: int = 0, preferred_memory: Any = None,
                 trace: Any = None, parameters: Mapping[str, Any] | str | None = None) -> None:
        self.model_name, self.model_version = model_name, model_version
        self._inputs, self._requested = list(inputs), list(requested_output_names)
        self._request_id, self._correlation_id, self._flags, self._timeout = request_id, correlation_id, flags, timeout
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(dict(parameters or {}))

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        """The request's timeout in microseconds (0: none)."""
        return self._timeout

    def parameters(self) -> str:
        return self._parameters

    def is_cancelled(self) -> bool:
        return False

    def set_release_flags(self, flags: int) -> None:
        """Accepted for compatibility; a request is released when ``execute`` returns."""

    def get_response_sender(self) -> Any:
        raise TritonModelException("decoupled models (response senders) are not supported by infergrid")

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        """Call ``model_name`` and wait: errors come back inside the response, as in Triton."""
        future = self._submit(decoupled)
        if isinstance(future, InferenceResponse):
            return future
        return self._response(future)

    async def async_exec(self, decoupled: bool = False) -> InferenceResponse:
        """Call ``model_name`` without blocking ``async def execute``: gather several to run them in parallel."""
        future = self._submit(decoupled)
        if isinstance(future, InferenceResponse):
            return future
        try:
            await asyncio.wrap_future(future)
        except Exception:  # noqa: BLE001 - read again in _response, which turns it into the response's error
            pass
        return self._response(future)

    def _submit(self, decoupled: bool) -> Future | InferenceResponse:
        if decoupled:
            return InferenceResponse(error=TritonError("decoupled BLS calls are not supported",
                                                       TritonError.UNSUPPORTED))
        if _bls is None:
            return InferenceResponse(error=TritonError(
                "BLS calls need the model served by infergrid (they are not available in initialize)",
                TritonError.UNAVAILABLE))
        version = self.model_version if self.model_version and self.model_version > 0 else None
        timeout_s = self._timeout / 1e6 if self._timeout else None
        return _bls(self.model_name, {t.name(): t.as_numpy() for t in self._inputs}, version, timeout_s)

    def _response(self, future: Future) -> InferenceResponse:
        try:
            outputs = future.result()
        except Exception as exc:  # noqa: BLE001 - the called model's failure is the response's error
            return InferenceResponse(error=TritonError.of_failure(exc))
        wanted = self._requested or list(outputs)
        missing = [name for name in wanted if name not in outputs]
        if missing:
            return InferenceResponse(error=TritonError(
                f"model {self.model_name!r} has no output {missing[0]!r}", TritonError.INVALID_ARG))
        return InferenceResponse([Tensor(name, outputs[name]) for name in wanted])


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def get_input_config_by_name(model_config: Mapping, name: str) -> dict | None:
    return next((dict(t) for t in model_config.get("input", ()) if t.get("name") == name), None)


def get_output_config_by_name(model_config: Mapping, name: str) -> dict | None:
    return next((dict(t) for t in model_config.get("output", ()) if t.get("name") == name), None)


def using_decoupled_model_transaction_policy(model_config: Mapping) -> bool:
    return bool((model_config.get("model_transaction_policy") or {}).get("decoupled", False))


class LogLevel:
    INFO, WARNING, ERROR, VERBOSE = range(4)


class Logger:
    """Triton's model logger; lines go to the replica's log (``infergrid.python_model``)."""

    _LEVELS = {LogLevel.INFO: logging.INFO, LogLevel.WARNING: logging.WARNING, LogLevel.ERROR: logging.ERROR,
               LogLevel.VERBOSE: logging.DEBUG}

    @classmethod
    def log(cls, message: str, level: int = LogLevel.INFO) -> None:
        logger.log(cls._LEVELS.get(level, logging.INFO), "%s", message)

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.log(message, LogLevel.INFO)

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.log(message, LogLevel.WARNING)

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.log(message, LogLevel.ERROR)

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.log(message, LogLevel.VERBOSE)


class ModelConfig:
    """What ``auto_complete_config(auto_complete_model_config)`` receives: the config as Triton's
    JSON, with Triton's setters. A setter that contradicts what the file declares raises, as in Triton."""

    def __init__(self, model_config: Mapping) -> None:
        self._config = json.loads(json.dumps(dict(model_config)))

    def as_dict(self) -> dict:
        return self._config

    def max_batch_size(self) -> int:
        return int(self._config.get("max_batch_size", 0))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = self.max_batch_size()
        if current and current != max_batch_size:
            raise ValueError(f"auto_complete_config: max_batch_size is {current} in the config; "
                             f"set_max_batch_size({max_batch_size}) contradicts it")
        self._config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self) -> None:
        self._config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, policy: Mapping) -> None:
        self._config["model_transaction_policy"] = dict(policy)

    def add_input(self, input: Mapping) -> None:  # noqa: A002 - Triton's parameter name
        self._add("input", input)

    def add_output(self, output: Mapping) -> None:
        self._add("output", output)

    def _add(self, kind: str, tensor: Mapping) -> None:
        missing = [k for k in ("name", "data_type", "dims") if k not in tensor]
        if missing:
            raise ValueError(f"auto_complete_config: add_{kind} needs {', '.join(missing)}")
        tensors = self._config.setdefault(kind, [])
        wanted = {**tensor, "dims": [int(d) for d in tensor["dims"]]}
        existing = next((t for t in tensors if t.get("name") == tensor["name"]), None)
        if existing is None:
            tensors.append(wanted)
            return
        for key in ("data_type", "dims"):  # what the config already declares must agree
            if key in existing and existing[key] != wanted[key]:
                raise ValueError(f"auto_complete_config: {kind} {tensor['name']!r} {key} is {existing[key]} in "
                                 f"the config, add_{kind} says {wanted[key]}")
