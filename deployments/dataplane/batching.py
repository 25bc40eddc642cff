"""Stack requests into one batch and split the outputs back. Pure numpy, no Ray.

A request may carry several rows; it counts as that many rows in the batch, and gets exactly its
own rows back. Models without a batch dimension (``max_batch_size: 0``) never reach this code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["stack_inputs", "split_outputs", "BatchStats"]


def stack_inputs(requests: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate each input along the batch dimension.

    Returns:
        The stacked inputs and the row count of each request, in order.
    """
    names = requests[0].keys()
    rows = [len(next(iter(request.values()))) for request in requests]
    if len(requests) == 1:
        return dict(requests[0]), rows
    return {name: np.concatenate([request[name] for request in requests]) for name in names}, rows


def split_outputs(outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """Cut each output back into per-request pieces (the inverse of ``stack_inputs``)."""
    bounds = np.cumsum(rows)[:-1]
    pieces = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: pieces[name][index] for name in outputs} for index in range(len(rows))]


@dataclass
class BatchStats:
    """Counters of requests and formed batches, kept by the deployment that forms the batches."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    max_rows: int = 0
    batch_sizes: Counter = field(default_factory=Counter)

    def record_batch(self, rows: int) -> None:
        """Count one executed batch of ``rows`` rows."""
        self.batches += 1
        self.rows += rows
        self.max_rows = max(self.max_rows, rows)
        self.batch_sizes[rows] += 1

    def snapshot(self) -> dict:
        """A JSON-ready copy (``batch_sizes``: rows per batch -> how many batches)."""
        return {"requests": self.requests, "batches": self.batches, "rows": self.rows, "max_rows": self.max_rows,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}
