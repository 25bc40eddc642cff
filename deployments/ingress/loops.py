"""Event loops on threads of their own, and awaiting a coroutine that runs on another one.

The front door keeps its listeners off Serve's replica loop (Serve's own work would delay every
read), and gRPC off the data plane's loop: ``grpc.aio`` takes one new call per turn of its loop,
so on a loop that is also forming batches and sending them, the calls it accepts per second are
bounded by how long a turn takes (measured: ~550 ModelInfer/s at 64 connections on the shared
loop; ``bench/results/grpc_http.md``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "new_event_loop", "run_on"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop (uvloop ships with ray[serve]); asyncio's own where it is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.SelectorEventLoop()
    return uvloop.new_event_loop()


async def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` (running on another thread), awaited from the caller's running loop."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


class LoopThread:
    """An event loop running forever on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on this loop from a thread that is not running a loop; wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop, awaited from another running loop."""
        return await run_on(self.loop, coro)
