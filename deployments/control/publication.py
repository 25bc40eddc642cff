"""Routing-table publication: replicas long-poll for a model's table, and their next poll is the ack.

Every replica that routes to a model (every front-door replica, and every ensemble's or pipeline's
that has it as a member) calls ``watch`` with the table it applied. ``watch`` answers at once when the
controller's table differs, else when it changes, else after ``WATCH_TIMEOUT_S``. A swap retires
the old version only after ``await_acks``: every running replica of every (application,
deployment) that follows the model reported the new table.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from deployments.dataplane.table import Route, ServedModel, Watcher, is_single_replica_group, routes_token
from deployments.names import FRONT_DOOR_APP, FRONT_DOOR_DEPLOYMENT

__all__ = ["TablePublisher", "ServedModels", "WATCH_TIMEOUT_S", "ACK_TIMEOUT_S"]

logger = logging.getLogger("infergrid")

WATCH_TIMEOUT_S = 10.0  # a long-poll answers at least this often, so replicas notice a restarted controller
ACK_TIMEOUT_S = 20.0  # how long a swap waits for every replica to apply a new table
_FRONT_DOOR = (FRONT_DOOR_APP, FRONT_DOOR_DEPLOYMENT)
ReplicaCounter = Callable[[Iterable[tuple[str, str]]], Awaitable[dict[tuple[str, str], int]]]


@dataclass(frozen=True)
class _Seen:
    """A watcher's last call: the table it had applied, when, and its group."""

    token: str | None
    at: float
    group: tuple[str, str]


class TablePublisher:
    """Change notifications and acks, per model (the tables themselves live in the model states)."""

    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}
        self._seen: dict[str, dict[str, _Seen]] = {}
        self.served = ServedModels()  # which models the front door follows

    def notify(self, model: str) -> None:
        """The model's table changed: answer its waiting long-polls now."""
        event = self._changed.pop(model, None)
        if event is not None:
            event.set()

    def forget(self, model: str) -> None:
        self._seen.pop(model, None)

    async def watch(self, model: str, watcher: Watcher | None, token: str | None, current: tuple[Route, ...] | None,
                    table: Callable[[], tuple[Route, ...] | None]) -> tuple[Route, ...] | None:
        """Record ``watcher``'s ack (``token``); answer ``current`` at once if it differs, else ``table()``
        once the model's table changes or after ``WATCH_TIMEOUT_S``."""
        group = watcher.group if watcher else _FRONT_DOOR
        replica = watcher.replica if watcher else ""
        self._seen.setdefault(model, {})[replica] = _Seen(token, time.monotonic(), group)
        if current is not None and routes_token(current) != token:
            return current
        event = self._changed.setdefault(model, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), WATCH_TIMEOUT_S)
        except TimeoutError:
            pass
        return table()

    async def await_acks(self, model: str, routes: tuple[Route, ...], count_replicas: ReplicaCounter) -> bool:
        """Wait until every running replica that routes to ``model`` reported ``routes``.

        Those are the front-door replicas and the replicas of every ensemble or pipeline
        that has ``model`` as a member, counted per (application, deployment) against how many
        replicas of it run, and each replica whose BLS calls reach ``model`` (a group of one).
        """
        token = routes_token(routes)
        deadline = time.monotonic() + ACK_TIMEOUT_S
        expected: dict[tuple[str, str], int] = {}
        while time.monotonic() < deadline:
            # A live replica calls at least every WATCH_TIMEOUT_S; older entries are replicas that are gone.
            now = time.monotonic()
            seen = {r: s for r, s in self._seen.get(model, {}).items() if now - s.at < 3 * WATCH_TIMEOUT_S}
            self._seen[model] = seen
            groups = {s.group for s in seen.values()} | {_FRONT_DOOR}
            if set(expected) != groups:
                expected = await count_replicas(g for g in groups if not is_single_replica_group(g))
                expected.update({g: 1 for g in groups if is_single_replica_group(g)})
            acked = dict.fromkeys(groups, 0)
            for s in seen.values():
                acked[s.group] += s.token == token
            if all(acked[g] >= n for g, n in expected.items()):
                return True
            await asyncio.sleep(0.02)
        logger.warning("model %s: not every replica routing to it confirmed the new routing table within %.0f s",
                       model, ACK_TIMEOUT_S)
        return False


class ServedModels:
    """Which models the front door answers for, long-polled by its replicas.

    A replica that learns of a model starts following its table (``TablePublisher.watch``), so a
    model is added here *before* its table's acks are awaited, and removed once nothing routes to it.
    """

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._epoch = os.urandom(4).hex()  # a restarted controller's generations never match the old ones
        self._count = 0
        self._generation = f"{self._epoch}:0"
        self._changed = asyncio.Event()
        self._applied: dict[str, tuple[int, float]] = {}  # front-door replica -> (generation it applied, when)
        self._acked = asyncio.Event()

    def _bump(self) -> None:
        self._count += 1
        self._generation = f"{self._epoch}:{self._count}"
        self._changed.set()
        self._changed = asyncio.Event()

    def add(self, model: ServedModel) -> None:
        if self._models.get(model.name) != model:
            self._models[model.name] = model
            self._bump()

    def remove(self, name: str) -> None:
        if self._models.pop(name, None) is not None:
            self._bump()

    async def watch(self, generation: str | None, replica: str | None = None) -> tuple[str, dict[str, ServedModel]]:
        """(generation, models) at once when ``generation`` is not the current one, else when it
        changes or after ``WATCH_TIMEOUT_S``. ``replica`` (a front-door replica's id) has applied
        ``generation``: its call is its ack."""
        epoch, _, count = (generation or "").partition(":")
        if replica is not None and epoch == self._epoch and count.isdigit():
            self._applied[replica] = (int(count), time.monotonic())
            self._acked.set()
            self._acked = asyncio.Event()
        if generation == self._generation:
            try:
                await asyncio.wait_for(self._changed.wait(), WATCH_TIMEOUT_S)
            except TimeoutError:
                pass
        return self._generation, dict(self._models)

    async def await_applied(self, replicas: int, timeout_s: float) -> bool:
        """Until ``replicas`` front-door replicas (heard from lately) applied the current generation:
        what a change's answer waits for, so it is in force when the caller hears back. False: timed out."""
        target, deadline = self._count, time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            recent = [count for count, at in self._applied.values() if now - at < 3 * WATCH_TIMEOUT_S]
            if sum(1 for count in recent if count >= target) >= replicas:
                return True
            if now >= deadline:
                return False
            try:
                await asyncio.wait_for(self._acked.wait(), deadline - now)
            except TimeoutError:
                pass
