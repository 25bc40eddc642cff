"""Version selection in the router, without Ray: which version a request reaches.

``select_version`` is the rule; the ``ModelRouter`` tests run the real router over stand-in
version handles (objects with ``describe`` / ``infer_batch``), no cluster started.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from backends.errors import ModelNotFound, ModelNotReady
from backends.signature import ModelSignature, TensorSpec
from deployments.dataplane.table import Route, select_version

SIGNATURE = ModelSignature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),))


def test_unversioned_requests_reach_the_newest_prepared_version() -> None:
    assert select_version("m", [3, 2, 1], {1, 2, 3}, None) == 3
    assert select_version("m", [3, 2, 1], {1, 2}, None) == 2  # 3 is published but not described yet
    assert select_version("m", [3, 2], set(), None) == 3  # none prepared: the newest (it answers 503 itself)


def test_a_version_asked_for_is_served_or_refused_by_name() -> None:
    assert select_version("m", [3, 2], {3}, "2") == 2  # asked for: even one not prepared yet
    assert select_version("m", [3, 2], {3}, 3) == 3
    with pytest.raises(ModelNotFound, match=r"no version '7'; served: 3, 2"):
        select_version("m", [3, 2], {3, 2}, "7")
    with pytest.raises(ModelNotFound, match="no version 'latest'"):
        select_version("m", [3, 2], {3, 2}, "latest")


def test_a_model_without_versions_is_not_ready() -> None:
    with pytest.raises(ModelNotReady, match="has no version to serve"):
        select_version("m", [], set(), None)
    with pytest.raises(ModelNotFound, match="served: none"):
        select_version("m", [], set(), 1)


class _Call:
    def __init__(self, function) -> None:
        self.remote = function


class StandInVersion:
    """What a version's DeploymentHandle offers the router: ``describe`` and ``infer_batch``."""

    def __init__(self, version: int, ready: bool = True) -> None:
        self.version, self.ready, self.batches = version, ready, []
        self.describe = _Call(self._describe)
        self.infer_batch = _Call(self._infer_batch)

    async def _describe(self):
        from deployments.dataplane.model_version import VersionInfo

        if not self.ready:
            raise RuntimeError("replica not up")
        return VersionInfo("m", self.version, "onnxruntime", SIGNATURE, 8, "cpu")

    async def _infer_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * self.version}

    async def shutdown_async(self) -> None:
        pass


def _run(coroutine):
    return asyncio.run(coroutine)


def test_the_router_sends_unversioned_requests_to_the_newest_version_that_can_answer() -> None:
    from deployments.dataplane.router import ModelRouter

    async def scenario() -> None:
        v1, v2 = StandInVersion(1), StandInVersion(2, ready=False)
        router = ModelRouter("m", handles={"a1": v1, "a2": v2})
        await router.apply([Route(2, "a2"), Route(1, "a1")])
        assert router.versions == [2, 1]
        version, outputs = await router.infer({"x": np.ones((1, 2), np.float32)})
        assert version == 1 and outputs["y"].tolist() == [[1.0, 1.0]]  # v2 could not describe itself
        with pytest.raises(ModelNotReady):
            await router.infer({"x": np.ones((1, 2), np.float32)}, version=2)
        with pytest.raises(ModelNotFound):
            await router.infer({"x": np.ones((1, 2), np.float32)}, version=5)

    _run(scenario())


def test_the_router_follows_a_new_table_and_validates_before_calling() -> None:
    from backends.errors import InputMismatch
    from deployments.dataplane.router import ModelRouter
    from deployments.dataplane.table import routes_token

    async def scenario() -> None:
        # Unbatched routes: serve.batch needs a Serve replica (the batch queue is tested on the cluster).
        v1, v2 = StandInVersion(1), StandInVersion(2)
        router = ModelRouter("m", handles={"a1": v1, "a2": v2})
        await router.apply([Route(1, "a1")])
        answers = await asyncio.gather(*(router.infer({"x": np.full((1, 2), i, np.float32)}) for i in range(3)))
        assert [a[1]["y"][0, 0] for a in answers] == [0.0, 1.0, 2.0] and v1.batches == [1, 1, 1]
        with pytest.raises(InputMismatch, match="datatype"):
            await router.infer({"x": np.ones((1, 2), np.int64)})
        assert v1.batches == [1, 1, 1]  # refused before it reached the version
        table = [Route(2, "a2"), Route(1, "a1")]
        await router.apply(table)
        assert router.token == routes_token(table)
        version, outputs = await router.infer({"x": np.ones((1, 2), np.float32)})
        assert version == 2 and outputs["y"].tolist() == [[2.0, 2.0]]

    _run(scenario())
