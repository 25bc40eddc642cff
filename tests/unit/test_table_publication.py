"""Routing-table long-polls and acks (``deployments.control.publication``), on asyncio alone: no Ray."""

from __future__ import annotations

import asyncio

from deployments.control import publication
from deployments.control.publication import TablePublisher
from deployments.dataplane.table import Route, Watcher, routes_token

OLD, NEW = (Route(1, "m:v1@a"),), (Route(2, "m:v2@b"), Route(1, "m:v1@a"))
ENDPOINT = Watcher("r1", "infergrid:frontdoor", "frontdoor")  # a front-door replica
ENSEMBLE = Watcher("r2", "risk", "endpoint")


def test_a_replica_behind_gets_the_table_at_once() -> None:
    async def scenario() -> None:
        got = await TablePublisher().watch("m", ENDPOINT, routes_token(OLD), NEW, lambda: NEW)
        assert got == NEW

    asyncio.run(scenario())


def test_a_replica_up_to_date_waits_for_the_next_change() -> None:
    async def scenario() -> None:
        published = {"table": OLD}
        routing = TablePublisher()
        waiting = asyncio.create_task(
            routing.watch("m", ENDPOINT, routes_token(OLD), OLD, lambda: published["table"]))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        published["table"] = NEW
        routing.notify("m")
        assert await asyncio.wait_for(waiting, 1) == NEW

    asyncio.run(scenario())


def test_acks_wait_for_every_replica_of_every_group_that_routes_to_the_model(monkeypatch) -> None:
    monkeypatch.setattr(publication, "ACK_TIMEOUT_S", 0.3)

    async def count(groups):
        return {g: 1 for g in groups}

    async def scenario() -> None:
        routing = TablePublisher()
        for watcher in (ENDPOINT, ENSEMBLE):  # both follow "m" and report the old table (answered at once)
            assert await routing.watch("m", watcher, routes_token(OLD), NEW, lambda: NEW) == NEW
        assert not await routing.await_acks("m", NEW, count)  # nobody has the new table: times out
        # The endpoint acks; the ensemble replica that calls "m" as a member has not yet.
        task = asyncio.create_task(routing.watch("m", ENDPOINT, routes_token(NEW), NEW, lambda: NEW))
        assert not await routing.await_acks("m", NEW, count)
        task2 = asyncio.create_task(routing.watch("m", ENSEMBLE, routes_token(NEW), NEW, lambda: NEW))
        await asyncio.sleep(0)
        assert await routing.await_acks("m", NEW, count)
        for t in (task, task2):
            t.cancel()

    asyncio.run(scenario())


def test_the_front_door_learns_of_added_and_removed_models() -> None:
    from deployments.control.publication import ServedModels
    from deployments.dataplane.table import ServedModel

    async def scenario() -> None:
        served = ServedModels()
        first, models = await served.watch(None)  # no generation yet: answered at once
        assert models == {}
        waiting = asyncio.create_task(served.watch(first))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # up to date: waits for a change
        served.add(ServedModel("m"))
        second, models = await asyncio.wait_for(waiting, 1)
        assert second != first and list(models) == ["m"]
        served.add(ServedModel("m"))  # unchanged: no new generation
        served.remove("m")
        third, models = await served.watch(second)
        assert models == {} and third not in (first, second)
        assert (await ServedModels().watch(third))[0] != third  # another controller: never the same generation

    asyncio.run(scenario())
