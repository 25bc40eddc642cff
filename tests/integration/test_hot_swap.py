"""Hot swaps under steady load, on the session's polling controller.

Each test adds its own model folder (a copy of fraud) to the served repository, drives 20
concurrent clients at it, changes the folder, and checks every reply: none failed, and after each
flip only the new version answered (every version has its own weights, so its output tells which
version computed it, not just the ``model_version`` field). Each test removes its model at the end,
which is the "model folder removed -> unloaded" case.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
import requests
from ray import serve
from repository_helpers import BODY, config_for, index_rows, output_of, version_apps, wait_for, write_version

from bench.traffic import Reply, Traffic

pytestmark = pytest.mark.integration

CLIENTS = 20


def first_reply(traffic: Traffic, version: int, after: float, timeout_s: float = 60) -> Reply:
    """The first reply from ``version`` sent after ``after`` (a rolled-back version answered before)."""
    def find() -> Reply | None:
        first = traffic.first_from(version)
        if first is None or first.sent >= after:
            return first
        return next((r for r in reversed(traffic.replies) if r.version == str(version) and r.sent >= after), None)
    return wait_for(find, timeout_s, f"a reply from version {version}")  # type: ignore[return-value]


def check_replies(replies: list[Reply], expected: dict[int, float]) -> None:
    failed = [r for r in replies if r.status != 200]
    assert not failed, f"{len(failed)} of {len(replies)} requests failed, e.g. {failed[:3]}"
    for reply in replies:
        assert reply.value == pytest.approx(expected[int(reply.version)], abs=1e-5), reply


def check_windows(replies: list[Reply], windows: list[tuple[int, float, float]]) -> None:
    """Every request sent inside (version, from, to) was answered by that version."""
    for version, start, end in windows:
        inside = [r for r in replies if start <= r.sent < end]
        wrong = [r for r in inside if r.version != str(version)]
        assert inside and not wrong, f"version {version}: {len(wrong)} of {len(inside)} replies from another version"


def test_five_new_versions_and_two_removals_under_load(url: str, new_model: Callable[..., Path]) -> None:
    model_dir = new_model("swap", seed=100)
    expected = {1: output_of(model_dir / "1")}
    traffic = Traffic(f"{url}/v2/models/swap/infer", BODY, CLIENTS).start()
    events: list[tuple[int, float, float]] = []  # (version now serving, change made, first reply from it)
    try:
        time.sleep(1)
        for version in range(2, 7):
            change = time.monotonic()
            expected[version] = write_version(model_dir, version, 100 + version, atomic=version % 2 == 0)
            events.append((version, change, first_reply(traffic, version, change).received))
            time.sleep(0.5)
        for removed, back_to in ((6, 5), (5, 4)):  # rollback: the previous version serves again
            change = time.monotonic()
            shutil.rmtree(model_dir / str(removed))
            events.append((back_to, change, first_reply(traffic, back_to, change).received))
            time.sleep(0.5)
    finally:
        replies = traffic.stop()
    print("swap seconds (change -> first reply):", [round(flip - change, 2) for _, change, flip in events])
    check_replies(replies, expected)
    ends = [change for _, change, _ in events[1:]] + [replies[-1].sent + 1]
    check_windows(replies, [(version, flip, end) for (version, _, flip), end in zip(events, ends)])
    assert len(expected) == 6 and len(set(expected.values())) == 6, "every version must compute differently"
    wait_for(lambda: len(version_apps("swap")) == 1, 30, "removed versions' applications to be deleted")
    assert [row["version"] for row in index_rows(url, "swap")] == ["4"]


def test_corrupt_version_never_serves_and_is_retried_when_fixed(url: str, new_model: Callable[..., Path]) -> None:
    model_dir = new_model("swapbad", seed=200)
    expected = {1: output_of(model_dir / "1")}
    traffic = Traffic(f"{url}/v2/models/swapbad/infer", BODY, CLIENTS).start()
    try:
        (model_dir / ".bad").mkdir()
        (model_dir / ".bad" / "model.onnx").write_bytes(b"\x08\x01garbage, not a model")
        os.rename(model_dir / ".bad", model_dir / "2")
        rows = wait_for(lambda: [r for r in index_rows(url, "swapbad") if r.get("state") == "UNAVAILABLE"], 60,
                        "the corrupt version to be reported")
        assert rows[0]["version"] == "2" and "model.onnx" in rows[0]["reason"], rows
        assert {r["version"]: r["state"] for r in index_rows(url, "swapbad")} == {"2": "UNAVAILABLE", "1": "READY"}
        time.sleep(2)  # several polls: the same broken folder is not retried
        assert len(version_apps("swapbad")) == 1
        shutil.rmtree(model_dir / "2")
        change = time.monotonic()
        expected[2] = write_version(model_dir, 2, 201, atomic=True)
        first_reply(traffic, 2, change)
    finally:
        replies = traffic.stop()
    check_replies(replies, expected)
    assert {r.version for r in replies if r.received < change} == {"1"}


def test_config_changes_apply_in_place_or_swap(url: str, new_model: Callable[..., Path], served: dict) -> None:
    no_batching = config_for("tune").replace("dynamic_batching { }", "")
    model_dir = new_model("tune", seed=300, config=no_batching)
    expected = {1: output_of(model_dir / "1")}
    [app] = version_apps("tune")

    def replica_actors() -> set[str]:
        named = ray.util.list_named_actors(all_namespaces=True)
        return {a["name"] for a in named if a["name"].startswith(f"SERVE_REPLICA::{app}#")}

    def max_batch() -> int:
        """The largest batch version 1 ran, from Triton's statistics (cluster-wide, reported each second)."""
        stats = requests.get(f"{url}/v2/models/tune/versions/1/stats", timeout=30).json()["model_stats"]
        return max((b["batch_size"] for row in stats for b in row["batch_stats"]), default=0)

    before = replica_actors()
    traffic = Traffic(f"{url}/v2/models/tune/infer", BODY, CLIENTS).start()
    try:
        wait_for(lambda: max_batch() > 0, 10, "the first batches in the statistics")
        assert max_batch() == 1, "without dynamic_batching every request runs alone"
        (model_dir / "config.pbtxt").write_text(config_for("tune", **{"dynamic_batching { }":
                                                                      "dynamic_batching { max_queue_delay_microseconds: 20000 }"}))
        wait_for(lambda: max_batch() > 1, 30, "batches of more than one row after enabling batching")
        (model_dir / "config.pbtxt").write_text(config_for("tune", **{"count: 1": "count: 2"}))
        wait_for(lambda: len(replica_actors()) == 2, 60, "a second replica")
        assert before < replica_actors() and version_apps("tune") == {app}, "changed in place: nothing restarted"
        # max_batch_size changes what is loaded: a swap to a new application, under load.
        (model_dir / "config.pbtxt").write_text(config_for("tune", **{"max_batch_size: 64": "max_batch_size: 32"}))
        wait_for(lambda: version_apps("tune") and app not in version_apps("tune"), 60, "the swap to a new application")
        meta = requests.get(f"{url}/v2/models/tune", timeout=30).json()
        assert meta["versions"] == ["1"]
    finally:
        replies = traffic.stop()
    check_replies(replies, expected)


def test_controller_killed_mid_load_recovers_without_failures(url: str, new_model: Callable[..., Path],
                                                              served: dict) -> None:
    from deployments.control.client import get_controller

    model_dir = new_model("restart", seed=400)
    expected = {1: output_of(model_dir / "1")}

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    class Bystander:
        def __call__(self) -> str:
            return "not a model"

    # Someone else's application, with a name that could be a model's: the restarted controller
    # must not adopt it, and so never unloads it.
    serve.run(Bystander.bind(), name="bystander", route_prefix=None)
    apps_before = set(serve.status().applications)
    traffic = Traffic(f"{url}/v2/models/restart/infer", BODY, CLIENTS).start()
    try:
        time.sleep(0.5)
        change = time.monotonic()
        expected[2] = write_version(model_dir, 2, 401, atomic=True)
        wait_for(lambda: any(name.startswith("restart:v2@") for name in serve.status().applications), 30,
                 "version 2 to start loading")
        seen_apps = set(serve.status().applications)
        ray.kill(get_controller(), no_restart=False)
        first_reply(traffic, 2, change, timeout_s=90)
        time.sleep(1)
    finally:
        replies = traffic.stop()
    check_replies(replies, expected)
    v2 = {name for name in seen_apps if name.startswith("restart:v2@")}
    assert len(v2) == 1
    wait_for(lambda: ray.get(get_controller().describe.remote(), timeout=60).applications["restart"] == sorted(v2),
             30, "the restarted controller to own exactly the version it adopted mid-load")
    wait_for(lambda: version_apps("restart") == v2, 30, "version 1 removed, version 2 deployed once")
    others = {name for name in apps_before if not name.startswith("restart")}
    assert others <= set(serve.status().applications), "every other application kept running"
    assert served["index"].keys() <= ray.get(get_controller().models.remote()).keys()
    time.sleep(2)  # a few polls of the restarted controller
    assert "bystander" in serve.status().applications
    assert "bystander" not in ray.get(get_controller().models.remote())
    serve.delete("bystander")


def test_repository_api_is_refused_outside_explicit_mode(url: str) -> None:
    response = requests.post(f"{url}/v2/repository/models/fraud/load", json={}, timeout=30)
    assert response.status_code == 400 and "--model-control-mode=poll" in response.json()["error"]
    response = requests.post(f"{url}/v2/repository/models/fraud/unload", json={}, timeout=30)
    assert response.status_code == 400
    assert requests.post(f"{url}/v2/models/fraud/infer", json=BODY, timeout=30).status_code == 200
    extensions = requests.get(f"{url}/v2", timeout=30).json()["extensions"]
    assert "model_repository" in extensions
