"""Chaos on the session's real cluster: steady load while a model replica, the model's HTTP ingress
(its endpoint replica), the server ingress and the repository controller are killed in turn.

Every request must get an answer (a success, or an HTTP error status) within its timeout: a
client-side timeout is a hang and fails the test. Afterwards everything serves again. The counts
are printed (``pytest -s``) and written to ``chaos_counts.json`` in the test's temporary folder.

Named to run last: it restarts the controller and the server ingress that every test shares.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import ray
import requests
from repository_helpers import BODY, wait_for

from deployments.control.client import get_controller

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT_S = 20  # the server's own timeout (header) is 10 s: past 20 s it is a hang
SERVER_TIMEOUT_MS = "10000"


def replica_actors(app: str, deployment: str) -> list[str]:
    """Names of the replica actors of one deployment (Serve names them ``SERVE_REPLICA::app#deployment#id``)."""
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def kill_replica(app: str, deployment: str) -> None:
    names = replica_actors(app, deployment)
    assert names, f"no replica of {app}/{deployment}"
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)


class SteadyLoad:
    """Threads sending requests in a loop until stopped; every outcome counted."""

    def __init__(self, url: str, model: str, threads: int = 4) -> None:
        self.outcomes: Counter[str] = Counter()
        self.last_success: dict[str, float] = {}
        self.errors: dict[str, set[str]] = {}  # outcome -> the distinct error bodies of 5xx answers
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._targets = [("infer", "POST", f"{url}/v2/models/{model}/infer", BODY)] * threads + [
            ("index", "POST", f"{url}/v2/repository/index", None),  # server ingress -> controller
        ]
        self._threads = [threading.Thread(target=self._run, args=t, daemon=True) for t in self._targets]

    def _run(self, kind: str, method: str, target: str, body: dict | None) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                response = session.request(method, target, json=body, timeout=CLIENT_TIMEOUT_S,
                                           headers={"X-Request-Timeout-Ms": SERVER_TIMEOUT_MS})
                outcome = f"{kind} {response.status_code}"
                if response.status_code >= 500:
                    with self._lock:
                        self.errors.setdefault(outcome, set()).add(response.text[:200])
                if response.status_code == 200:
                    with self._lock:
                        self.last_success[kind] = time.monotonic()
            except requests.Timeout:
                outcome = f"{kind} HANG"
            except requests.ConnectionError:
                outcome = f"{kind} connection closed"  # the server end went away: an answer, not a hang
                session = requests.Session()
                time.sleep(0.05)
            with self._lock:
                self.outcomes[outcome] += 1

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 5)

    def succeeds_again(self, kinds: tuple[str, ...], after: float, timeout_s: float, what: str) -> None:
        wait_for(lambda: all(self.last_success.get(k, 0) > after + 0.5 for k in kinds), timeout_s, what)


def test_everything_serves_again_after_replica_ingress_and_controller_are_killed(
        served: dict, new_model, tmp_path: Path) -> None:
    url = served["url"]
    new_model("chaos", seed=4)
    version_app = next(name for name in served_apps() if name.startswith("chaos:v1"))
    kills = [
        ("model replica", lambda: kill_replica(version_app, "model"), ("infer",)),
        ("front door", lambda: kill_replica("infergrid:frontdoor", "frontdoor"), ("infer", "index")),
        ("controller", lambda: ray.kill(get_controller(), no_restart=False), ("index",)),
    ]
    recovery_s = {}
    with SteadyLoad(url, "chaos") as load:
        load.succeeds_again(("infer", "index"), 0, 30, "the load to start succeeding")
        for what, kill, kinds in kills:
            killed_at = time.monotonic()
            kill()
            load.succeeds_again(kinds, killed_at, 90, f"service after killing the {what}")
            recovery_s[what] = round(min(load.last_success[k] for k in kinds) - killed_at, 2)
            time.sleep(1)
    counts = dict(sorted(load.outcomes.items()))
    report = {"outcomes": counts, "recovery_s": recovery_s,
              "errors": {k: sorted(v) for k, v in sorted(load.errors.items())}}
    (tmp_path / "chaos_counts.json").write_text(json.dumps(report, indent=1))
    print("chaos:", json.dumps(report))

    assert not [k for k in counts if k.endswith("HANG")], report
    assert counts.get("infer 200", 0) > 50 and counts.get("index 200", 0) > 10, report
    for outcome in counts:  # successes, or errors a client can act on; never a 4xx for good requests
        status = outcome.split(" ", 1)[1]
        assert status in ("200", "500", "502", "503", "504", "connection closed"), report
    # A request whose replica died is told so, as a 503 to retry, not an internal error.
    assert not [e for e in load.errors.get("infer 500", ()) if "ActorDied" in e or "ActorError" in e], report
    # Afterwards: the killed parts are back, and everything answers.
    assert ray.get(get_controller().describe.remote(), timeout=60).mode == "poll"
    assert replica_actors(version_app, "model") and replica_actors("infergrid:frontdoor", "frontdoor")
    for model in ("chaos", "fraud"):
        wait_for(lambda m=model: requests.post(f"{url}/v2/models/{m}/infer", json=BODY, timeout=30).status_code == 200,
                 60, f"{model} to serve")
    assert requests.get(f"{url}/v2/models/loan_decision/ready", timeout=30).status_code == 200
    assert requests.post(f"{url}/v2/repository/index", timeout=30).status_code == 200


def served_apps() -> list[str]:
    from ray import serve

    return list(serve.status().applications)


@ray.remote(num_cpus=0)
class DyingVersion:
    """Stands where a version's replica stands for a router: describes a real version, then holds
    every batch until it is killed (a real Ray actor death, as a killed replica's)."""

    def __init__(self, info) -> None:
        self._info = info

    async def describe(self):
        return self._info

    async def infer_batch(self, inputs):
        await asyncio.sleep(60)


def test_a_request_whose_replica_dies_gets_a_503_to_retry(served: dict, run_async) -> None:
    """The chaos test kills a replica between requests as often as during one; here the request is
    certainly inside the replica when it dies."""
    from ray import serve

    from backends.errors import ReplicaLost
    from deployments.dataplane.router import VersionRoute
    from deployments.dataplane.table import Route
    from deployments.ingress.http import error_response
    from deployments.names import VERSION_DEPLOYMENT

    fraud_v1 = next(name for name in served_apps() if name.startswith("fraud:v1"))

    async def describe():  # a handle's router lives on the loop it is first used on
        return await serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=fraud_v1).describe.remote()

    info = run_async(describe())
    replica = DyingVersion.remote(info)
    route = VersionRoute("fraud", Route(1, "dying"), handle=replica)
    inputs = {"features": np.asarray(BODY["inputs"][0]["data"], dtype=np.float32).reshape(1, -1)}

    async def infer_and_render() -> tuple[BaseException, int, dict]:
        try:
            await route.infer(inputs)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it is
            response = error_response(exc, "fraud")
            return exc, response.status_code, dict(response.headers)
        raise AssertionError("the request was answered by a replica that never answers")

    async def kill_during() -> tuple[BaseException, int, dict]:
        await route.describe()  # the actor is up: the request below goes straight into infer_batch
        task = asyncio.ensure_future(infer_and_render())
        await asyncio.sleep(1.0)
        ray.kill(replica, no_restart=True)
        return await asyncio.wait_for(task, 30)

    exc, status, headers = run_async(kill_during())
    assert isinstance(exc, ReplicaLost) and "died" in str(exc) and "'fraud' version 1" in str(exc), exc
    assert status == 503 and headers.get("retry-after") == "1"
