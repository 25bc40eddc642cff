"""Shadow (mirror) traffic: a copy of an unversioned request to the policy's shadow version, compared with
the primary's answer and counted, never waited for.

The data plane answers the client with the primary's outputs first and only then starts the copy, as a
task of its own; at most ``MAX_IN_FLIGHT`` copies per model and replica are in flight (more are dropped
and counted), each bounded by the shadow's ``timeout_ms``; its failures are counted and never raised. So
a failing or slow shadow cannot change the primary's answers, errors or latency beyond the capacity its
copies use.

Counted per (model, primary version, shadow version), for ``/metrics``:

    infergrid_shadow_requests_total{outcome}   compared | failed | timeout | dropped
    infergrid_shadow_agreements_total          copies whose decision agreed (argmax; ``threshold``: value > t)
    infergrid_shadow_abs_diff_sum_total        the sum over copies of the largest absolute difference
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from deployments.repository.traffic import Shadow

__all__ = ["ShadowMirror", "compare_outputs", "MAX_IN_FLIGHT"]

logger = logging.getLogger("infergrid")

MAX_IN_FLIGHT = 64
Infer = Callable[[dict, str], Awaitable[tuple[int, dict]]]


def compare_outputs(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray],
                    threshold: float | None) -> tuple[float, bool]:
    """(largest absolute difference over the numeric outputs both have, do their decisions agree).

    The decision is the first common output's argmax over its last axis per row (one value per row:
    ``value > threshold``, 0.5 without one); answers that differ in shape disagree, difference inf.
    """
    names = [name for name in primary if name in shadow]
    largest, agree = 0.0, True
    for index, name in enumerate(names):
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape:
            return float("inf"), False
        if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":  # BYTES: equal or not
            if index == 0:
                agree = bool(np.array_equal(a, b))
            continue
        if a.size:
            largest = max(largest, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        if index == 0 and a.size:
            if threshold is not None or a.shape[-1:] in ((1,), ()):
                cut = 0.5 if threshold is None else threshold
                agree = bool(np.array_equal(a > cut, b > cut))
            else:
                agree = bool(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))
    return largest, agree


class ShadowMirror:
    """One model's shadow copies in one replica.

    Args:
        model: the model's name (metric labels).
        infer: ``(inputs, version) -> (answered by, outputs)`` of the model's servable.
        recorder: where copies are counted (None: not counted, still compared).
    """

    def __init__(self, model: str, infer: Infer, recorder) -> None:
        self._model = model
        self._infer = infer
        self._recorder = recorder
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def mirror(self, shadow: Shadow, inputs: dict, primary: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Start a copy of a request the primary ``primary`` answered with ``outputs`` (or count it dropped)."""
        labels = (self._model, str(primary), str(shadow.version))
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self._count(labels, "dropped")
            return
        task = asyncio.get_running_loop().create_task(self._copy(shadow, inputs, outputs, labels))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, shadow: Shadow, inputs: dict, outputs: Mapping[str, np.ndarray],
                    labels: tuple[str, str, str]) -> None:
        try:
            _, copied = await asyncio.wait_for(self._infer(inputs, str(shadow.version)), shadow.timeout_ms / 1000)
        except TimeoutError:
            self._count(labels, "timeout")
            return
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised
            logger.debug("model %s: shadow %s failed: %s", self._model, shadow.version, exc)
            self._count(labels, "failed")
            return
        difference, agree = compare_outputs(outputs, copied, shadow.threshold)
        self._count(labels, "compared")
        if self._recorder is not None:
            self._recorder.inc("infergrid_shadow_agreements", labels, 1.0 if agree else 0.0)
            self._recorder.inc("infergrid_shadow_abs_diff_sum", labels, difference if np.isfinite(difference) else 0.0)

    def _count(self, labels: tuple[str, str, str], outcome: str) -> None:
        if self._recorder is not None:
            self._recorder.inc("infergrid_shadow_requests", (*labels, outcome))
