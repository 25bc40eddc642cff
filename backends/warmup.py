"""``model_warmup``: the samples a version runs before it takes traffic, as Triton builds them.

Each ``model_warmup`` entry names its inputs with ``data_type``, ``dims`` and one of
``zero_data``, ``random_data`` or ``input_data_file`` (raw bytes in ``<model>/warmup/<file>``,
BYTES elements with their 4-byte little-endian length prefixes); ``batch_size`` rows are stacked
when the model batches, and the sample runs ``count`` times. Without ``model_warmup`` the
deployment runs one zero-filled row instead (a Python model: nothing, as in Triton). Pure numpy.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.dtypes import config_to_v2, v2_to_numpy
from backends.errors import BackendLoadError

__all__ = ["WarmupSample", "warmup_samples"]


@dataclass(frozen=True)
class WarmupSample:
    """One ``model_warmup`` entry: its name, the inputs, how many times to run them."""

    name: str
    inputs: dict[str, np.ndarray]
    count: int


def _from_file(path: Path, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = path.read_bytes()
    count = int(np.prod(shape)) if shape else 1
    if datatype != "BYTES":
        return np.frombuffer(raw, dtype=v2_to_numpy(datatype).newbyteorder("<"))[:count].reshape(shape)
    values, offset = [], 0
    while offset + 4 <= len(raw) and len(values) < count:
        (length,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4:offset + 4 + length])
        offset += 4 + length
    array = np.empty(count, dtype=object)
    array[:] = (values * count)[:count] if values else [b""] * count
    return array.reshape(shape)


def _input(spec: Mapping, shape: tuple[int, ...], model_dir: Path, rng: np.random.Generator) -> np.ndarray:
    datatype = config_to_v2(spec.get("data_type", "TYPE_FP32"))
    dtype = v2_to_numpy(datatype)
    if "input_data_file" in spec:
        return _from_file(model_dir / "warmup" / spec["input_data_file"], datatype, shape)
    if datatype == "BYTES":
        array = np.empty(shape, dtype=object)
        array.fill(b"" if "zero_data" in spec or "random_data" not in spec else b"warmup")
        return array
    if "random_data" in spec:
        if dtype.kind == "f" or datatype == "BF16":
            return rng.random(shape, dtype=np.float32).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(0, 100, shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


def warmup_samples(triton_config: Mapping, model_dir: Path) -> list[WarmupSample]:
    """The ``model_warmup`` samples of a config (Triton's JSON form), ready to run.

    Raises:
        BackendLoadError: a sample cannot be built (a missing data file, a bad type); names it.
    """
    batching = int(triton_config.get("max_batch_size", 0)) > 0
    rng = np.random.default_rng(0)  # the same samples on every replica and every load
    samples = []
    for index, entry in enumerate(triton_config.get("model_warmup", ())):
        name = entry.get("name") or f"model_warmup[{index}]"
        lead = (max(1, int(entry.get("batch_size", 1))),) if batching else ()
        try:
            inputs = {input_name: _input(spec, lead + tuple(int(d) for d in spec.get("dims", ())), model_dir, rng)
                      for input_name, spec in (entry.get("inputs") or {}).items()}
        except Exception as exc:  # noqa: BLE001 - a file, a type or a shape: the load fails naming the sample
            raise BackendLoadError(f"model_warmup {name!r}: cannot build its inputs: {exc}") from exc
        samples.append(WarmupSample(name, inputs, max(1, int(entry.get("count", 1)))))
    return samples
