"""The dynamic batcher: Triton's scheduling rules on one asyncio loop, a future per queued row.

Why not ``@serve.batch``: it inspects the wrapped function's signature for every request (a tenth
of the front door's CPU under load, measured with py-spy) and it waits out its timeout even when
a replica is idle. The rules here are Triton's:

* with no ``max_queue_delay_microseconds`` a row that finds a free slot goes at once (on the next
  turn of the loop, so rows that arrived in the same read go together); rows that arrive while
  every slot is busy wait, and the next free slot takes them all (up to the batch limit);
* with a delay, a batch goes when it is full or when its oldest row has waited the delay;
* at most ``max_concurrent`` batches are in flight (the version's replicas, times the batches
  each may hold), so a loaded model gets full batches instead of many small ones.

Rows whose caller gave up (a cancelled future) are dropped before a batch is formed. An item may
weigh several rows (a whole request of a Python model): a batch then holds items up to the row limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Combine submitted items into calls of ``run(items) -> results`` (one result per item, in order).

    Args:
        run: runs one batch.
        max_rows: the most rows in one batch (an item is one row unless submitted with more).
        delay_s: how long the oldest item may wait for a fuller batch (0: never wait for more).
        max_concurrent: batches in flight at once.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_rows: int, delay_s: float = 0.0,
                 max_concurrent: int = 1) -> None:
        self._run = run
        self._queue: deque[tuple[T, asyncio.Future, float, int]] = deque()
        self._queued_rows = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self._tasks: set[asyncio.Task] = set()
        self.configure(max_rows, delay_s, max_concurrent)

    def configure(self, max_rows: int, delay_s: float, max_concurrent: int) -> None:
        """New limits, applied to what is queued too (a changed ``dynamic_batching`` in place)."""
        self.max_rows, self.delay_s = max(1, max_rows), max(0.0, delay_s)
        self.max_concurrent = max(1, max_concurrent)

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, item: T, rows: int = 1) -> asyncio.Future:
        """Queue ``item`` (``rows`` rows); the future resolves to its result (or its batch's exception)."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, time.monotonic(), rows))
        self._queued_rows += rows
        self._schedule()
        return future

    def _schedule(self) -> None:
        if self._running >= self.max_concurrent or not self._queue:
            return
        loop = asyncio.get_running_loop()
        if self._queued_rows >= self.max_rows:
            self._flush()
            return
        if self.delay_s <= 0:
            if not self._soon:
                self._soon = True
                loop.call_soon(self._on_soon)
            return
        if self._timer is None:
            waited = time.monotonic() - self._queue[0][2]
            self._timer = loop.call_later(max(0.0, self.delay_s - waited), self._on_timer)

    def _on_soon(self) -> None:
        self._soon = False
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        """Start batches while a slot is free and rows wait."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._running < self.max_concurrent and self._queue:
            batch: list[tuple[T, asyncio.Future]] = []
            rows = 0
            while self._queue and (not batch or rows + self._queue[0][3] <= self.max_rows):
                item, future, _, weight = self._queue.popleft()
                self._queued_rows -= weight
                if not future.done():  # done: its caller gave up (cancelled)
                    batch.append((item, future))
                    rows += weight
            if not batch:
                continue
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._schedule()

    async def _execute(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._running -= 1
            self._schedule()
