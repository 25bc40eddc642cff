"""LoopThread: work handed to a loop on another thread, results and failures back to the caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deployments.ingress.loops import LoopThread


async def _where(value: int) -> tuple[int, str]:
    await asyncio.sleep(0)
    return value, threading.current_thread().name


async def _fail() -> None:
    raise ValueError("bad field")


def test_run_from_a_plain_thread_runs_on_the_loop_thread() -> None:
    worker = LoopThread("infergrid-test-loop")
    assert worker.is_alive()
    assert worker.run(_where(3), timeout_s=5) == (3, "infergrid-test-loop")
    with pytest.raises(ValueError, match="bad field"):
        worker.run(_fail(), timeout_s=5)


def test_call_from_another_running_loop() -> None:
    worker = LoopThread("infergrid-test-other")

    async def caller() -> list[tuple[int, str]]:
        results = await asyncio.gather(*(worker.call(_where(i)) for i in range(20)))
        with pytest.raises(ValueError, match="bad field"):
            await worker.call(_fail())
        return list(results)

    results = asyncio.run(caller())
    assert results == [(i, "infergrid-test-other") for i in range(20)]
