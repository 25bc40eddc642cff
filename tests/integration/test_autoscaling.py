"""Autoscaling on the session's polling controller: a load step on a fraud copy raises its replicas,
they fall back after the load stops, no request fails on the way; scale to zero and back.

The settings are the model's own (config.pbtxt ``parameters``), with delays shortened so the test
takes seconds: two rows per replica as the target, so 16 clients want more than one replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
import requests
from ray import serve
from repository_helpers import BODY, config_for, version_apps, wait_for

from bench.traffic import Traffic

pytestmark = pytest.mark.integration


def autoscaled(name: str, **settings: object) -> str:
    extra = "".join(f'parameters {{ key: "autoscaling.{key}" value {{ string_value: "{value}" }} }}\n'
                    for key, value in settings.items())
    return config_for(name) + extra


def running_replicas(model: str) -> int:
    applications = serve.status().applications
    return sum(int(applications[app].deployments["model"].replica_states.get("RUNNING", 0))
               for app in version_apps(model) if app in applications)


def replica_actors(model: str) -> set[str]:
    """Names of the model's replica actors (Serve names them by application, deployment, replica id)."""
    return {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith(f"SERVE_REPLICA::{model}:v")}


def metric_lines(url: str, name: str, model: str) -> list[str]:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return [line for line in text.splitlines() if line.startswith(name + "{") and f'model="{model}"' in line]


def replica_gauge(url: str, model: str) -> float | None:
    lines = metric_lines(url, "infergrid_model_replicas", model)
    return float(lines[0].split()[-1]) if lines else None


def check_all_answered(replies: list, phase: str) -> None:
    failed = [r for r in replies if r.status != 200]
    assert replies and not failed, f"{phase}: {len(failed)} of {len(replies)} requests failed, e.g. {failed[:3]}"


def test_a_load_step_raises_replicas_and_they_fall_back(url: str, new_model: Callable[..., Path]) -> None:
    model_dir = new_model("elastic", config=autoscaled("elastic", min_replicas=1, max_replicas=3, target_rows=2,
                                           upscale_delay_s=1, downscale_delay_s=4, look_back_period_s=2))
    assert running_replicas("elastic") == 1
    wait_for(lambda: replica_gauge(url, "elastic") == 1.0, 30, "the replica gauge of elastic")
    infer = f"{url}/v2/models/elastic/infer"
    heavy = Traffic(infer, BODY, connections=16).start()  # ~16 rows outstanding: wants 8 replicas, gets 3
    try:
        started = time.monotonic()
        wait_for(lambda: running_replicas("elastic") >= 2, 30, "elastic to scale up under load")
        scaled_up_s = time.monotonic() - started
        wait_for(lambda: (replica_gauge(url, "elastic") or 0) >= 2, 30, "/metrics to show the new replicas")
        time.sleep(2)  # the new replicas take load
        peak = replica_actors("elastic")
        light = Traffic(infer, BODY, connections=1).start()  # one row outstanding: one replica is enough
    finally:
        check_all_answered(heavy.stop(), "scaling up")
    try:
        wait_for(lambda: running_replicas("elastic") == 1, 60, "elastic to scale back to one replica")
        time.sleep(2)
    finally:
        check_all_answered(light.stop(), "scaling down")
    # Scaling added and removed replicas; none that stayed was restarted or replaced.
    assert replica_actors("elastic") <= peak and len(peak) >= 2
    up = metric_lines(url, "infergrid_replica_count_changes_total", "elastic")
    assert [line for line in up if 'direction="up"' in line], up
    assert [float(line.split()[-1]) for line in metric_lines(url, "infergrid_model_replicas_max", "elastic")] == [3.0]
    print(f"scaled up {scaled_up_s:.1f} s after the load step")
    # New bounds in the config apply in place: same application, same replica, new maximum.
    apps, actors = version_apps("elastic"), replica_actors("elastic")
    (model_dir / "config.pbtxt").write_text(autoscaled("elastic", min_replicas=1, max_replicas=2, target_rows=2))
    wait_for(lambda: [float(line.split()[-1]) for line in metric_lines(url, "infergrid_model_replicas_max",
                                                                       "elastic")] == [2.0], 60, "the new bound")
    assert version_apps("elastic") == apps and replica_actors("elastic") == actors


def test_scaled_to_zero_the_first_request_waits_for_a_replica(url: str, new_model: Callable[..., Path]) -> None:
    new_model("sleepy", config=autoscaled("sleepy", min_replicas=0, max_replicas=1, downscale_delay_s=1,
                                          downscale_to_zero_delay_s=2, look_back_period_s=2))
    wait_for(lambda: running_replicas("sleepy") == 0, 60, "sleepy to scale to zero when idle")
    started = time.monotonic()
    response = requests.post(f"{url}/v2/models/sleepy/infer", json=BODY, timeout=120)
    assert response.status_code == 200, response.text
    print(f"first request after zero answered in {time.monotonic() - started:.1f} s")
    assert running_replicas("sleepy") == 1
