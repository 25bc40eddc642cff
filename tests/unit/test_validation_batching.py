"""Signature validation before batching, and stacking/splitting of batches."""

from __future__ import annotations

import numpy as np
import pytest

from backends.errors import InputMismatch
from backends.signature import ModelSignature, TensorSpec
from deployments.dataplane.batching import BatchStats, split_outputs, stack_inputs
from deployments.protocol.v2 import validate_inputs

SIGNATURE = ModelSignature(
    inputs=(TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "INT64", (-1, -1))),
    outputs=(TensorSpec("y", "FP32", (-1, 1)),),
)


def inputs(rows: int = 2, a_cols: int = 4, b_rows: int | None = None) -> dict[str, np.ndarray]:
    return {"a": np.zeros((rows, a_cols), np.float32), "b": np.zeros((b_rows or rows, 3), np.int64)}


def test_valid_inputs_return_rows() -> None:
    assert validate_inputs(inputs(3), SIGNATURE, max_batch_size=8) == 3


@pytest.mark.parametrize("bad, message", [
    ({"a": np.zeros((1, 4), np.float32)}, "input 'b' is missing"),
    ({**inputs(), "c": np.zeros(1, np.float32)}, "unknown input 'c'"),
    (inputs(a_cols=5), "input 'a': shape \\[2, 5\\]"),
    ({"a": np.zeros((2, 4), np.float64), "b": np.zeros((2, 3), np.int64)}, "input 'a': datatype FP64"),
    (inputs(2, b_rows=3), "input 'b': batch size 3"),
    (inputs(9), "exceeds the model's max_batch_size 8"),
    ({"a": np.zeros((4,), np.float32), "b": np.zeros((1, 3), np.int64)}, "input 'a': shape \\[4\\]"),
    (inputs(0), "at least 1"),
])
def test_validation_errors_name_the_input(bad: dict, message: str) -> None:
    with pytest.raises(InputMismatch, match=message):
        validate_inputs(bad, SIGNATURE, max_batch_size=8)


def test_unbatched_model_counts_one_row() -> None:
    signature = ModelSignature((TensorSpec("a", "FP32", (4,)),), (TensorSpec("y", "FP32", (1,)),))
    assert validate_inputs({"a": np.zeros(4, np.float32)}, signature, max_batch_size=0) == 1


def test_stack_and_split_give_each_request_its_rows() -> None:
    requests = [{"x": np.full((n, 2), i, np.float32)} for i, n in enumerate([1, 3, 2])]
    stacked, rows = stack_inputs(requests)
    assert stacked["x"].shape == (6, 2) and rows == [1, 3, 2]
    pieces = split_outputs({"y": stacked["x"] * 10}, rows)
    assert [p["y"].shape[0] for p in pieces] == [1, 3, 2]
    assert all((p["y"] == i * 10).all() for i, p in enumerate(pieces))


def test_batch_stats() -> None:
    stats = BatchStats()
    stats.requests = 3
    stats.record_batch(4)
    stats.record_batch(2)
    stats.record_batch(4)
    assert stats.snapshot() == {"requests": 3, "batches": 3, "rows": 10, "max_rows": 4,
                                "batch_sizes": {"2": 1, "4": 2}}


@pytest.mark.parametrize("text, expected", [
    ("max_batch_size: 16", (0, 0)),
    ("max_batch_size: 16 dynamic_batching { }", (16, 0)),
    ("max_batch_size: 16 dynamic_batching { max_queue_delay_microseconds: 300 }", (16, 300)),
    ("max_batch_size: 16 dynamic_batching { preferred_batch_size: [4, 8, 32] }", (8, 0)),
    ("max_batch_size: 0 dynamic_batching { }", (0, 0)),
])
def test_batch_settings_follow_triton(text: str, expected: tuple[int, int]) -> None:
    from deployments.dataplane.table import batch_settings
    from deployments.repository.config import parse_config

    assert batch_settings(parse_config(text, "m/config.pbtxt", "m")) == expected
