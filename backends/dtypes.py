"""Datatype names across the three vocabularies we meet: KServe v2, Triton config, numpy.

KServe v2 (and Triton's HTTP API) name tensors' types ``FP32``, ``BYTES``...; Triton's config.pbtxt
spells the same types ``TYPE_FP32``, ``TYPE_STRING``...; backends hand us numpy arrays. BYTES tensors
are numpy ``object`` arrays of ``bytes``, as Triton's own client builds them; BF16 tensors are
``ml_dtypes.bfloat16`` arrays.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from backends.errors import ConfigError, InputMismatch

__all__ = ["V2_DATATYPES", "config_to_v2", "v2_to_numpy", "numpy_to_v2", "is_bfloat16"]

_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
    "BF16": np.dtype(ml_dtypes.bfloat16),  # numpy has no bfloat16; ml_dtypes' is what tritonclient and TF use
}
V2_DATATYPES: tuple[str, ...] = tuple(_V2_TO_NUMPY)
_NUMPY_TO_V2 = {dtype: name for name, dtype in _V2_TO_NUMPY.items()}
_NUMPY_TO_V2[np.dtype(np.bytes_)] = "BYTES"


def config_to_v2(config_type: str) -> str:
    """Map a config.pbtxt data type (``TYPE_FP32``) to its v2 name (``FP32``).

    Raises:
        ConfigError: the type is not one infergrid serves.
    """
    name = config_type.removeprefix("TYPE_")
    name = "BYTES" if name == "STRING" else name
    if name not in _V2_TO_NUMPY:
        raise ConfigError(f"unsupported data_type {config_type!r}; use one of TYPE_" + ", TYPE_".join(
            "STRING" if t == "BYTES" else t for t in V2_DATATYPES))
    return name


def v2_to_numpy(datatype: str) -> np.dtype:
    """Numpy dtype for a v2 datatype name.

    Raises:
        InputMismatch: the name is not a v2 datatype.
    """
    try:
        return _V2_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InputMismatch(
            f"unknown datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}") from None


def is_bfloat16(dtype: np.dtype) -> bool:
    """True for ``ml_dtypes.bfloat16`` (numpy sees it as a 2-byte opaque ``V`` type)."""
    return np.dtype(dtype) == _V2_TO_NUMPY["BF16"]


def numpy_to_v2(dtype: np.dtype) -> str:
    """v2 datatype name for a numpy dtype (unicode and bytes strings are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype]
    except KeyError:
        raise InputMismatch(f"numpy dtype {dtype} has no v2 datatype") from None
