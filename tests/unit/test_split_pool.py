"""A split's shared batch queue in the real router, over stand-in version handles (no cluster).

Unkeyed requests of a 90/10 or 50/50 split wait in one queue and each formed batch goes to one version:
the proportions of rows hold to within a batch, batches are as full as one version's would be, a failing
version's errors name it (for the guard), and versions that cannot share a queue fall back to a draw.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from backends.errors import InferenceFailed
from backends.signature import ModelSignature, TensorSpec
from deployments.dataplane.split_pool import failed_version
from deployments.dataplane.table import Route
from deployments.dataplane.version_route import BACKLOG_SOURCE
from deployments.repository.traffic import TrafficPolicy

SIGNATURE = ModelSignature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),))
OTHER = ModelSignature((TensorSpec("z", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),))


class _Call:
    def __init__(self, function) -> None:
        self.remote = function


class Version:
    """A version handle: ``describe`` and ``infer_batch`` (a short sleep, so batches overlap)."""

    def __init__(self, version: int, signature: ModelSignature = SIGNATURE, fail: bool = False) -> None:
        self.version, self.signature, self.fail, self.batches, self.backlogs = version, signature, fail, [], []
        self.describe, self.infer_batch = _Call(self._describe), _Call(self._infer_batch)

    async def _describe(self):
        from deployments.dataplane.model_version import VersionInfo

        return VersionInfo("m", self.version, "onnxruntime", self.signature, 64, "cpu")

    async def _infer_batch(self, inputs: dict[str, np.ndarray], backlog: tuple[str, int] | None = None) -> dict:
        await asyncio.sleep(0.002)
        if self.fail:
            raise InferenceFailed(f"version {self.version} is broken")
        self.batches.append(len(next(iter(inputs.values()))))
        self.backlogs.append(backlog)
        return {"y": next(iter(inputs.values())) * self.version}


async def _router(*versions: Version):
    from deployments.dataplane.router import ModelRouter

    router = ModelRouter("m", handles={f"a{v.version}": v for v in versions})
    await router.apply([Route(v.version, f"a{v.version}", batch_rows=64) for v in versions])
    return router


async def _load(router, policy: TrafficPolicy, requests: int, concurrency: int = 64) -> list:
    """``requests`` unkeyed requests, ``concurrency`` at a time: (version, its own row back) or the error."""
    answers: list = []

    async def client(index: int) -> None:
        for n in range(index, requests, concurrency):
            row = np.full((1, 2), n, np.float32)
            try:
                version, outputs = await router.infer_split({"x": row}, policy)
                assert outputs["y"][0, 0] == n * version  # its own row, from the version that says it answered
                answers.append(version)
            except InferenceFailed as exc:
                answers.append(exc)

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return answers


@pytest.mark.parametrize("weights", [(90, 10), (50, 50)])
def test_a_split_batches_together_and_keeps_its_proportions(weights: tuple[int, int]) -> None:
    async def scenario() -> tuple[list, Version, Version]:
        v1, v2 = Version(1), Version(2)
        router = await _router(v1, v2)
        policy = TrafficPolicy(((1, weights[0]), (2, weights[1])))
        return await _load(router, policy, 5000), v1, v2

    answers, v1, v2 = asyncio.run(scenario())
    assert abs(answers.count(1) - 5000 * weights[0] / 100) <= 64  # within one batch of the exact share
    batches = v1.batches + v2.batches
    # Every batch is fed from the whole queue: 64 clients fill batches of ~63 rows (a draw per request
    # leaves each version's queue its share of them: ~32 rows a batch here, measured).
    assert sum(batches) == 5000 and sum(batches) / len(batches) >= 48
    # Each batch call tells the version how many rows still wait behind it (for its autoscaler);
    # 64 clients with one request each fill a batch, so little is left behind it.
    backlogs = v1.backlogs + v2.backlogs
    assert {source for source, _ in backlogs} == {BACKLOG_SOURCE} and 0 <= min(r for _, r in backlogs) <= 64


def test_a_failing_version_of_a_split_is_named_by_its_errors() -> None:
    async def scenario() -> list:
        router = await _router(Version(1), Version(2, fail=True))
        return await _load(router, TrafficPolicy(((1, 50), (2, 50))), 400)

    answers = asyncio.run(scenario())
    errors = [a for a in answers if isinstance(a, Exception)]
    assert errors and {failed_version(e) for e in errors} == {2} and answers.count(1) >= 150


def test_versions_that_cannot_share_a_queue_are_drawn_per_request() -> None:
    async def scenario() -> tuple[set, list, list]:
        v1, v2 = Version(1), Version(2, signature=OTHER)
        router = await _router(v1, v2)
        policy = TrafficPolicy(((1, 50), (2, 50)))
        answered = set()
        for _ in range(40):
            try:
                answered.add((await router.infer_split({"x": np.ones((1, 2), np.float32)}, policy))[0])
            except Exception:  # noqa: BLE001 - version 2 takes "z": a draw for 2 is refused by its signature
                answered.add("refused")
        return answered, v1.batches, v2.batches

    answered, first, second = asyncio.run(scenario())
    assert answered == {1, "refused"} and first and not second
