"""Traffic policies without Ray: weighted and sticky choices (the share that moves when weights change),
the policy's JSON and file, the repository applying it, the data plane routing by it, the CLI's flags."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from backends.errors import ConfigError
from deployments.dataplane.plane import DataPlane
from deployments.dataplane.traffic import REQUEST_HEADERS
from deployments.launch.traffic_cli import traffic_change
from deployments.repository.roots import RepositoryRoots
from deployments.repository.traffic import TRAFFIC_FILE, TrafficPolicy, parse_split, read_traffic, write_traffic


def _binomial_ok(hits: int, n: int, p: float) -> bool:
    """Within the 99.9% interval (z = 3.29) of a binomial(n, p)."""
    return abs(hits - n * p) <= 3.29 * (n * p * (1 - p)) ** 0.5


def test_an_unkeyed_split_lands_in_proportion() -> None:
    policy = TrafficPolicy(((3, 90), (4, 10)))
    rng = random.Random(1)
    draws = [policy.choose(None, rng) for _ in range(20000)]
    assert set(draws) == {3, 4} and _binomial_ok(draws.count(4), len(draws), 0.1)
    assert TrafficPolicy(((3, 0), (4, 1))).choose() == 4  # weight 0 gets nothing


def test_sticky_keys_stay_and_only_the_needed_share_moves() -> None:
    before, after = TrafficPolicy(((3, 90), (4, 10)), "x-user"), TrafficPolicy(((3, 50), (4, 50)), "x-user")
    keys = [{"x-user": f"user-{i}"} for i in range(5000)]
    first = [before.choose(k) for k in keys]
    assert first == [before.choose(k) for k in keys]  # the same key, the same version
    assert _binomial_ok(first.count(4), len(keys), 0.1)
    second = [after.choose(k) for k in keys]
    moved = [(a, b) for a, b in zip(first, second) if a != b]
    assert all(move == (3, 4) for move in moved)  # raising 4's weight moves keys to 4, never away from it
    assert _binomial_ok(len(moved), len(keys), 0.4)
    assert before.choose({"other": "x"}, random.Random(0)) in (3, 4)  # no key: random


def test_the_policy_json_and_its_errors() -> None:
    policy = TrafficPolicy.from_dict({"weights": {"4": 10, "3": 90}, "sticky": {"header": "X-User-Id"}}, "t")
    assert policy == TrafficPolicy(((3, 90), (4, 10)), "x-user-id") and policy.versions == (3, 4)
    assert TrafficPolicy.from_dict(policy.to_dict(), "t") == policy
    assert policy.promoted(4) == TrafficPolicy(((4, 100), (3, 0)), "x-user-id")
    for bad, field in (([], "JSON object"), ({"weights": {}}, "weights"), ({"weights": {"x": 1}}, "version"),
                       ({"weights": {"3": -1}}, r"weights\[3\]"), ({"weights": {"3": 0}}, "above 0"),
                       ({"weights": {"3": 1}, "shadow": 1}, "shadow"),
                       ({"weights": {"3": 1}, "sticky": {"header": "a b"}}, "sticky.header")):
        with pytest.raises(ConfigError, match=field):
            TrafficPolicy.from_dict(bad, "t")
    assert parse_split("3=90, 4=10") == {"3": 90, "4": 10}
    with pytest.raises(ConfigError, match="VERSION=WEIGHT"):
        parse_split("3:90")


def _model(root: Path, versions: tuple[int, ...], policy: str = "latest { num_versions: 1 }") -> Path:
    folder = root / "m"
    for version in versions:
        (folder / str(version)).mkdir(parents=True)
        (folder / str(version) / "model.onnx").write_bytes(b"x")
    (folder / "config.pbtxt").write_text(f'backend: "onnxruntime" version_policy: {{ {policy} }}\n')
    return folder


def test_the_repository_serves_every_version_a_policy_names(tmp_path: Path) -> None:
    folder = _model(tmp_path, (1, 2, 3))
    roots = RepositoryRoots([tmp_path])
    assert roots.scan("m").served_versions == [3]
    write_traffic(folder, TrafficPolicy(((1, 0), (3, 100))))
    entry = roots.scan("m")
    assert entry.served_versions == [3, 1] and entry.config.traffic == read_traffic(folder)
    (folder / TRAFFIC_FILE).write_text('{"weights": {"7": 1}}')
    assert "version 7 is not in the model folder" in roots.scan("m").error
    (folder / TRAFFIC_FILE).write_text("{nope")
    assert "not JSON" in roots.scan("m").error
    write_traffic(folder, None)
    assert not (folder / TRAFFIC_FILE).exists() and roots.scan("m").served_versions == [3]


class _Versions:
    """A servable that answers with the version it was asked for, and remembers it."""

    def __init__(self) -> None:
        self.asked: list = []

    async def infer(self, inputs, version, timeout_s):
        self.asked.append(version)
        return int(version or 9), {}


def _answered(plane: DataPlane, times: int, version=None) -> set[int]:
    import asyncio

    import numpy as np

    async def run() -> set[int]:
        return {(await plane.infer({"x": np.ones((1, 1))}, version)).version for _ in range(times)}

    return asyncio.run(run())


def test_the_data_plane_routes_unversioned_inference_by_the_policy() -> None:
    plane = DataPlane("m", servable=_Versions())
    plane.set_traffic(TrafficPolicy(((1, 0), (2, 1)), "x-user").to_dict())
    assert _answered(plane, 10) == {2} and _answered(plane, 3, "1") == {1}
    assert plane.version(None) is None  # metadata calls never split
    sticky = TrafficPolicy(((1, 50), (2, 50)), "x-user")
    plane.set_traffic(sticky.to_dict())
    token = REQUEST_HEADERS.set({"x-user": "alice"})
    try:
        assert _answered(plane, 20) == {sticky.choose({"x-user": "alice"})}
    finally:
        REQUEST_HEADERS.reset(token)
    assert _answered(plane, 200) == {1, 2}  # no key: a draw (this servable has no shared split queue)
    plane.set_traffic({})
    assert plane.traffic is None and _answered(plane, 3) == {9} and plane.servable.asked[-1] is None


def test_the_cli_flags_become_one_change() -> None:
    def args(**kwargs) -> argparse.Namespace:
        values = {"split": None, "sticky_header": None, "sticky_parameter": None, "promote": None, "rollback": False,
                  "clear": False}
        return argparse.Namespace(**{**values, **kwargs})

    assert traffic_change(args()) is None
    assert traffic_change(args(split="3=90,4=10", sticky_header="x-user")) == {
        "policy": {"weights": {"3": 90, "4": 10}, "sticky": {"header": "x-user"}}}
    assert traffic_change(args(promote=4)) == {"promote": 4} and traffic_change(args(rollback=True)) == {
        "rollback": True}
    with pytest.raises(ConfigError, match="one of"):
        traffic_change(args(promote=4, rollback=True))
    assert json.loads(json.dumps(traffic_change(args(clear=True)))) == {"clear": True}


def test_shadow_outputs_are_compared_by_difference_and_decision() -> None:
    import numpy as np

    from deployments.dataplane.shadow import compare_outputs

    primary = {"p": np.array([[0.2], [0.7]], dtype=np.float32)}
    assert compare_outputs(primary, {"p": np.array([[0.3], [0.6]], dtype=np.float32)}, None) == (
        pytest.approx(0.1), True)
    assert compare_outputs(primary, {"p": np.array([[0.6], [0.7]], dtype=np.float32)}, None)[1] is False
    assert compare_outputs(primary, {"p": np.array([[0.2], [0.7]])}, 0.75) == (pytest.approx(0.0, abs=1e-6), True)
    logits = {"y": np.array([[1.0, 3.0, 2.0]])}
    assert compare_outputs(logits, {"y": np.array([[1.0, 2.5, 2.6]])}, None)[1] is False
    assert compare_outputs(logits, {"y": np.zeros((2, 3))}, None) == (float("inf"), False)


def test_a_shadow_is_never_waited_for_and_its_failures_are_counted() -> None:
    import asyncio

    import numpy as np

    from deployments.observability.metrics import Recorder

    calls: list[str] = []

    class Versions:  # the servable's contract: (inputs, version, timeout) -> (answered by, outputs)
        async def infer(self, inputs, version, timeout_s):
            calls.append(version)
            if version == "2":
                await asyncio.sleep(0.3)  # a slow shadow
                raise RuntimeError("shadow broke")
            if version == "3":
                await asyncio.sleep(5)
            return int(version), {"p": inputs["x"] * 2}

    recorder = Recorder()
    plane = DataPlane("m", Versions(), recorder=recorder)
    plane.set_traffic({"weights": {"1": 1}, "shadow": {"version": 2, "share": 1.0}})

    async def run() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcome = await plane.infer({"x": np.ones((1, 1))})
        took = loop.time() - start
        assert outcome.version == 1 and outcome.outputs["p"][0, 0] == 2.0
        await asyncio.sleep(0.5)
        plane.set_traffic({"weights": {"1": 1}, "shadow": {"version": 3, "timeout_ms": 50}})
        await plane.infer({"x": np.ones((1, 1))})
        assert (await plane.infer({"x": np.ones((1, 1))}, "1")).version == 1  # versioned: no copy
        await asyncio.sleep(0.3)
        return took

    assert asyncio.run(run()) < 0.2 and sorted(calls) == ["1", "1", "1", "2", "3"]
    counters = {(name, tuple(labels)): value for name, labels, value in recorder.snapshot()["counters"]}
    assert counters[("infergrid_shadow_requests", ("m", "1", "2", "failed"))] == 1
    assert counters[("infergrid_shadow_requests", ("m", "1", "3", "timeout"))] == 1
    assert TrafficPolicy.from_dict({"weights": {"1": 1}, "shadow": {"version": 3}}, "t").versions == (1, 3)
    with pytest.raises(ConfigError, match="shadow.share"):
        TrafficPolicy.from_dict({"weights": {"1": 1}, "shadow": {"version": 3, "share": 2}}, "t")


def test_guard_windows_trip_on_errors_or_latency_and_step_when_they_pass() -> None:
    from deployments.dataplane.guard import GuardWatch, p99
    from deployments.repository.traffic import Guard

    policy = TrafficPolicy(((1, 90), (2, 10)), guard=Guard(10, max_error_rate=0.1, max_p99_ratio=1.5,
                                                           steps=(10, 50, 100)))
    assert (policy.primary, policy.candidates) == (1, (2,)) and p99([0.1] * 99 + [5.0]) == 0.1
    watch = GuardWatch()
    for _ in range(10):
        assert watch.observe(policy, 1, True, 0.010) is None  # the primary's window: p99 10 ms
    events = [watch.observe(policy, 2, index >= 2, 0.011) for index in range(10)]
    assert events[:-1] == [None] * 9 and events[-1].event == "trip" and "error rate 20.0%" in events[-1].reason
    slow = [watch.observe(policy, 2, True, 0.020) for _ in range(10)][-1]
    assert slow.event == "trip" and "max_p99_ratio" in slow.reason
    passed = [watch.observe(policy, 2, True, 0.011) for _ in range(10)][-1]
    assert passed.event == "step" and policy.stepped(2).weights == ((1, 50), (2, 50))
    assert policy.stepped(2).stepped(2).weights == ((1, 0), (2, 100))
    assert policy.stepped(2).stepped(2).stepped(2) is None and policy.with_weight(2, 0).candidates == ()
    with pytest.raises(ConfigError, match="guard.steps"):
        TrafficPolicy.from_dict({"weights": {"1": 1}, "guard": {"steps": [50, 10]}}, "t")
    again = TrafficPolicy.from_dict(policy.to_dict(), "t")
    assert again == policy


def test_the_data_plane_applies_a_guard_trip_at_once_and_reports_it() -> None:
    import asyncio

    import numpy as np

    from backends.errors import InferenceFailed

    class Versions:
        async def infer(self, inputs, version, timeout_s):
            if version == "2":
                raise InferenceFailed("the candidate is broken")
            return int(version), {"p": inputs["x"]}

    plane = DataPlane("m", Versions())
    reported = []

    async def report(model, event, seen) -> None:
        reported.append((event.event, event.version, seen.to_dict()["weights"]))

    plane.report_guard(report)
    plane.set_traffic({"weights": {"1": 50, "2": 50}, "guard": {"window": 10, "max_error_rate": 0.01}})

    async def run() -> list[int]:
        answered = []
        for _ in range(200):
            try:
                answered.append((await plane.infer({"x": np.ones((1, 1))})).version)
            except InferenceFailed:
                answered.append(0)
        await asyncio.sleep(0)  # the report is a task of its own
        return answered

    answered = asyncio.run(run())
    assert reported == [("trip", 2, {"1": 50, "2": 50})]
    assert plane.traffic.to_dict()["weights"] == {"1": 50, "2": 0} and answered.count(0) == 10
    assert set(answered[-50:]) == {1}  # after the trip only the primary answers


def test_compare_reads_two_versions_from_two_scrapes() -> None:
    from deployments.launch.compare_cli import parse_samples, quantile, shadow_row, version_rows
    from deployments.observability.metrics import Recorder, merge_snapshots, render_prometheus

    recorder = Recorder()
    before = parse_samples(render_prometheus(merge_snapshots([recorder.snapshot()])).decode())
    for version, latency, count in (("1", 0.004, 90), ("2", 0.040, 10)):
        series = recorder.series("m", version)
        for _ in range(count):
            series.succeeded(1, latency, latency / 2, latency / 2, 0)
    recorder.failure("m", "2", "BACKEND", 0.01)
    recorder.inc("infergrid_shadow_requests", ("m", "1", "2", "compared"), 10)
    recorder.inc("infergrid_shadow_agreements", ("m", "1", "2"), 9)
    recorder.inc("infergrid_shadow_abs_diff_sum", ("m", "1", "2"), 0.5)
    after = parse_samples(render_prometheus(merge_snapshots([recorder.snapshot()])).decode())
    rows = {r["version"]: r for r in version_rows(before, after, 10.0, "m", [1, 2])}
    assert rows[2]["errors"] == 1 and rows[1]["qps"] == pytest.approx(9.0) and rows[2]["qps"] == pytest.approx(1.1)
    assert rows[1]["p50_ms"] < 5 < 25 < rows[2]["p50_ms"] <= 50
    shadow = shadow_row(before, after, "m", [1, 2])
    assert shadow["compared"] == 10 and shadow["agreement"] == 0.9 and shadow["mean_abs_diff"] == 0.05
    assert shadow_row(before, after, "m", [2, 1])["primary"] == 1  # either order
    assert quantile(0.5, [(0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]) == 0.01
    assert quantile(0.99, [(0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]) == pytest.approx(0.0982)
    assert quantile(0.5, []) is None


def test_a_change_is_answered_once_every_front_door_applied_it() -> None:
    import asyncio

    from deployments.control.publication import ServedModels
    from deployments.dataplane.table import ServedModel

    async def run() -> tuple[bool, bool, bool]:
        served = ServedModels()
        generation, _ = await served.watch(None, "door-a")
        served.add(ServedModel("m", traffic={"weights": {"1": 1}}))
        early = await served.await_applied(2, 0.05)  # nobody has applied it yet
        new, _ = await served.watch(generation, "door-a")  # the change reaches the doors ...
        loop = asyncio.get_running_loop()

        async def applies(door: str, after_s: float) -> None:
            await asyncio.sleep(after_s)
            await served.watch(new, door)  # ... and each door's next poll acks it (then waits)

        tasks = [loop.create_task(applies("door-a", 0.0)), loop.create_task(applies("door-b", 0.05))]
        one_short = await served.await_applied(3, 0.2)
        both = await served.await_applied(2, 2.0)
        for task in tasks:
            task.cancel()
        return early, both, one_short

    early, both, one_short = asyncio.run(run())
    assert (early, both, one_short) == (False, True, False)


def test_a_policy_sticky_on_a_request_parameter() -> None:
    from deployments.dataplane.traffic import REQUEST_PARAMETERS

    policy = TrafficPolicy.from_dict({"weights": {"1": 50, "2": 50}, "sticky": {"parameter": "user_id"}}, "t")
    assert policy.to_dict()["sticky"] == {"parameter": "user_id"} and TrafficPolicy.from_dict(policy.to_dict(), "t")
    picks = {policy.choose(None, parameters={"user_id": 7}) for _ in range(20)}
    assert len(picks) == 1 and policy.choose(None, parameters={"user_id": "7"}) in picks  # the value as text
    plane = DataPlane("m", servable=_Versions())
    plane.set_traffic(policy.to_dict())
    token = REQUEST_PARAMETERS.set({"user_id": 7})
    try:
        assert _answered(plane, 10) == picks
    finally:
        REQUEST_PARAMETERS.reset(token)
    for bad, field in (({"header": "a", "parameter": "b"}, "not both"), ({"parameter": "a b"}, "parameter"),
                       ({"cookie": "x"}, "cookie")):
        with pytest.raises(ConfigError, match=field):
            TrafficPolicy.from_dict({"weights": {"1": 1}, "sticky": bad}, "t")
