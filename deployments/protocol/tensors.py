"""One tensor to and from the wire: JSON ``data`` (nested or flat) and Triton's binary form.

Binary layout (Triton's binary tensor data extension): little-endian, row-major; BOOL one byte per
element; each BYTES element is a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from backends.dtypes import is_bfloat16, v2_to_numpy
from backends.errors import InputMismatch

__all__ = ["array_from_json", "array_to_json", "array_from_binary", "array_to_binary"]

_NUMBER_TYPES = frozenset((int, float))


def _element_count(shape: list[int], name: str) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InputMismatch(f"input {name!r}: 'shape' must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise InputMismatch(f"input {name!r}: 'shape' has a negative dimension: {shape}")
    return math.prod(shape)


def _flatten(data: Any) -> list:
    """Flatten nested lists (v2 allows both forms); scalars stay as they are."""
    if not isinstance(data, list) or not data or not isinstance(data[0], list):
        return data if isinstance(data, list) else [data]
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def array_from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    """Decode a JSON ``data`` field into an array of ``shape``.

    Raises:
        InputMismatch: wrong element count, or values that do not fit ``datatype``; names the input.
    """
    count = _element_count(shape, name)
    dtype = v2_to_numpy(datatype)
    flat = _flatten(data)
    if len(flat) != count:
        raise InputMismatch(f"input {name!r}: shape {shape} needs {count} elements, 'data' has {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(v, (str, bytes)) for v in flat):
            raise InputMismatch(f"input {name!r}: BYTES data must be strings")
        array = np.empty(count, dtype=object)
        array[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
        return array.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise InputMismatch(f"input {name!r}: BOOL data must be true or false")
    else:
        kinds = set(map(type, flat))  # JSON decoders give exact int and float (a C pass)
        if not kinds <= _NUMBER_TYPES:
            raise InputMismatch(f"input {name!r}: {datatype} data must be numbers")
        if float in kinds and dtype.kind in "iu":
            raise InputMismatch(f"input {name!r}: {datatype} data must be integers")
    try:
        return np.array(flat, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InputMismatch(f"input {name!r}: data does not fit {datatype}: {exc}") from exc


def array_to_json(array: np.ndarray) -> list:
    """Flat, row-major JSON values; BYTES become strings (UTF-8) as Triton returns them."""
    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    if is_bfloat16(array.dtype):  # its scalars are not JSON numbers; every bfloat16 is exact in float32
        return array.astype(np.float32).ravel().tolist()
    return array.ravel().tolist()


def array_from_binary(name: str, datatype: str, shape: list[int], blob: bytes | memoryview) -> np.ndarray:
    """Decode one input's raw bytes.

    Raises:
        InputMismatch: the byte count does not match the shape; names the input.
    """
    count = _element_count(shape, name)
    if datatype == "BYTES":
        return _bytes_from_binary(name, shape, count, blob)
    dtype = v2_to_numpy(datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(blob) != expected:
        raise InputMismatch(
            f"input {name!r}: binary_data_size is {len(blob)} bytes, shape {shape} of {datatype} needs {expected}")
    return np.frombuffer(blob, dtype=dtype).reshape(shape)


def _bytes_from_binary(name: str, shape: list[int], count: int, blob: bytes | memoryview) -> np.ndarray:
    view = memoryview(blob)
    values, offset = [], 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InputMismatch(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InputMismatch(f"input {name!r}: BYTES element runs past binary_data_size")
        values.append(bytes(view[offset:offset + length]))
        offset += length
    if len(values) != count:
        raise InputMismatch(f"input {name!r}: shape {shape} needs {count} BYTES elements, got {len(values)}")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array.reshape(shape)


def array_to_binary(array: np.ndarray) -> bytes:
    """Raw little-endian bytes of an output (BYTES with 4-byte length prefixes)."""
    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        parts = []
        for value in array.ravel():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts += [struct.pack("<I", len(raw)), raw]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
