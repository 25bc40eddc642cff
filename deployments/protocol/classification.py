"""Triton's classification extension: an output asked for with ``classification: k`` comes back
as the k highest-valued classes instead of the raw tensor. Pure numpy.

The returned tensor is BYTES of shape ``[batch, k]`` (``[k]`` for a model without a batch
dimension), each element ``"<value>:<index>[:<label>]"``: the value as the model produced it
(floats written as C's ``%f``, as Triton's ``std::to_string``), its index over the output's
elements, and the label from the output's ``label_filename`` when the config has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from backends.errors import InvalidRequest

__all__ = ["classify", "classify_outputs", "requested_count", "read_labels"]


def requested_count(name: str, value: object) -> int:
    """The ``classification`` parameter of output ``name`` as a class count.

    Raises:
        InvalidRequest: not a positive integer; names the output.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"output {name!r}: parameters.classification must be a positive integer, got {value!r}")
    return value


def _text(value: np.generic) -> str:
    return f"{float(value):f}" if np.issubdtype(value.dtype, np.floating) else str(value.item())


def _top(row: np.ndarray, count: int, labels: Sequence[str]) -> list[bytes]:
    flat = row.ravel()
    order = np.argsort(-flat.astype(np.float64), kind="stable")[:count]
    return [(f"{_text(flat[i])}:{i}" + (f":{labels[i]}" if i < len(labels) else "")).encode() for i in order]


def classify(array: np.ndarray, count: int, labels: Sequence[str] = (), batched: bool = True) -> np.ndarray:
    """The top ``count`` classes of each row (of the whole tensor when not ``batched``).

    Raises:
        InvalidRequest: the output holds strings (nothing to rank).
    """
    if array.dtype == np.object_ or array.dtype.kind in "SUb":
        raise InvalidRequest(f"classification needs a numeric output, this one is {array.dtype}")
    rows = [array] if not batched or array.ndim == 0 else list(array)
    classes = [_top(np.asarray(row), count, labels) for row in rows]
    result = np.empty((len(classes), len(classes[0]) if classes else 0), dtype=object)
    for index, row in enumerate(classes):
        result[index, :] = row
    return result[0] if not batched or array.ndim == 0 else result


def classify_outputs(outputs: Mapping[str, np.ndarray], counts: Mapping[str, int],
                     labels: Mapping[str, Sequence[str]], triton_config: Mapping) -> dict[str, np.ndarray]:
    """``outputs`` with each output named in ``counts`` replaced by its top classes.

    Whether the first dimension is the batch is the config's ``max_batch_size`` (a model without
    config: any output of more than one dimension).
    """
    if not counts:
        return dict(outputs)
    result = dict(outputs)
    for name, count in counts.items():
        if name in result:
            array = result[name]
            batched = int(triton_config["max_batch_size"]) > 0 if "max_batch_size" in triton_config else array.ndim > 1
            result[name] = classify(array, count, labels.get(name, ()), batched)
    return result


def read_labels(model_dir: Path, triton_config: Mapping) -> dict[str, tuple[str, ...]]:
    """Labels per output, from each output's ``label_filename`` (one label per line) in ``model_dir``;
    an output whose file is missing or unreadable has none."""
    labels = {}
    for output in triton_config.get("output", ()):
        filename = output.get("label_filename")
        if filename:
            try:
                text = (Path(model_dir) / filename).read_text(encoding="utf-8")
            except OSError:
                continue
            labels[output["name"]] = tuple(line.strip() for line in text.splitlines())
    return labels
