"""Input limits and the bounded queue over real HTTP: clear 413/400/503 answers, nothing taken down."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from repository_helpers import BODY, config_for, wait_for

pytestmark = pytest.mark.integration


def post(url: str, model: str, data: bytes) -> requests.Response:
    return requests.post(f"{url}/v2/models/{model}/infer", data=data, timeout=60,
                         headers={"Content-Type": "application/json"})


def test_oversized_deep_and_huge_requests_are_refused_by_their_limit(url: str) -> None:
    big = json.dumps({"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32",
                                  "data": [0.0] * (3 * 1024 * 1024)}]}).encode()
    assert len(big) > 10 * 1024 * 1024
    start = time.perf_counter()
    response = post(url, "fraud", big)
    assert response.status_code == 413 and "parameters.max_request_bytes" in response.json()["error"]
    assert time.perf_counter() - start < 10
    deep = json.dumps(BODY).encode().replace(b'"data": [', b'"data": ' + b"[" * 5000, 1)
    response = post(url, "fraud", deep)
    assert response.status_code == 400 and "parameters.max_json_depth" in response.json()["error"]
    huge = json.dumps({"inputs": [{"name": "features", "shape": [1 << 20, 1 << 20], "datatype": "FP32",
                                   "data": [0.0]}]}).encode()
    response = post(url, "fraud", huge)
    assert response.status_code == 413 and "parameters.max_request_elements" in response.json()["error"]
    assert post(url, "fraud", json.dumps(BODY).encode()).status_code == 200  # and it still serves


def test_a_model_sets_its_own_body_limit(url: str, new_model: Callable[..., Path]) -> None:
    config = config_for("small_body") + 'parameters { key: "max_request_bytes" value: { string_value: "1500" } }\n'
    new_model("small_body", seed=61, config=config)
    assert post(url, "small_body", json.dumps(BODY).encode()).status_code == 200
    two_rows = {"inputs": [{**BODY["inputs"][0], "shape": [8, 16], "data": BODY["inputs"][0]["data"] * 8}]}
    response = post(url, "small_body", json.dumps(two_rows).encode())
    assert response.status_code == 413 and "limit of 1500 bytes" in response.json()["error"]


def test_a_full_queue_answers_503_with_retry_after_at_once(url: str, new_model: Callable[..., Path]) -> None:
    slow_queue = config_for("bounded", **{"dynamic_batching { ":
                                          "dynamic_batching { max_queue_delay_microseconds: 400000 "
                                          "default_queue_policy { max_queue_size: 4 }"})
    new_model("bounded", seed=62, config=slow_queue)
    time.sleep(0.5)

    def one(_: int) -> tuple[int, float, str | None]:
        start = time.perf_counter()
        response = post(url, "bounded", json.dumps(BODY).encode())
        return response.status_code, time.perf_counter() - start, response.headers.get("Retry-After")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(12)))
    ok = [a for a in answers if a[0] == 200]
    full = [a for a in answers if a[0] == 503]
    assert ok and full and len(ok) + len(full) == 12, answers
    assert len(ok) <= 4 + 4  # a batch of at most 4 queued rows, and perhaps the next one
    assert all(retry == "1" for _, _, retry in full)
    assert max(seconds for _, seconds, _ in full) < 0.3, full  # refused at once, not after the 0.4 s wait
    assert post(url, "bounded", json.dumps(BODY).encode()).status_code == 200


def test_requests_time_out_with_504_and_leave_the_queue(url: str, new_model: Callable[..., Path]) -> None:
    slow = {"dynamic_batching { ": "dynamic_batching { max_queue_delay_microseconds: 600000"}
    model_dir = new_model("timed", seed=63, config=config_for("timed", **slow))
    # The queue policy is part of dynamic_batching, so it changes in place (no reload).
    policy = "max_queue_delay_microseconds: 600000 default_queue_policy { max_queue_size: 2 " \
             "default_timeout_microseconds: 150000 }"
    (model_dir / "config.pbtxt").write_text(config_for("timed", **{"dynamic_batching { ": "dynamic_batching { " + policy}))
    body = json.dumps(BODY).encode()
    wait_for(lambda: post(url, "timed", body).status_code == 504, 30, "the timeout to apply")
    for _ in range(4):  # more timed-out rows than the queue holds: each must leave the queue
        time.sleep(0.7)  # past the last batch window: this request opens a new 0.6 s one
        start = time.perf_counter()
        response = post(url, "timed", body)
        assert response.status_code == 504, response.text
        assert "default_timeout_microseconds" in response.json()["error"]
        assert time.perf_counter() - start < 0.5
    ok = requests.post(f"{url}/v2/models/timed/infer", data=body, timeout=60,
                       headers={"Content-Type": "application/json", "X-Request-Timeout-Ms": "3000"})
    assert ok.status_code == 200, ok.text  # the request's own timeout wins; the queue is not leaked full
    bad = requests.post(f"{url}/v2/models/timed/infer", data=body, timeout=60,
                        headers={"Content-Type": "application/json", "X-Request-Timeout-Ms": "soon"})
    assert bad.status_code == 400 and "X-Request-Timeout-Ms" in bad.json()["error"]


def test_past_the_inflight_bound_the_front_door_refuses_at_once(url: str, new_model: Callable[..., Path]) -> None:
    """More concurrent requests for one model than ``INFERGRID_INFLIGHT_PER_MODEL`` (48 in this
    session) in one front-door replica: the excess gets 503 + Retry-After at once, unread, in JSON
    naming the setting, while the admitted ones wait out their 0.5 s batch window and succeed."""
    per_replica = int(os.environ["INFERGRID_INFLIGHT_PER_MODEL"])  # set by conftest
    held = config_for("admitted", **{"dynamic_batching { ": "dynamic_batching { max_queue_delay_microseconds: 500000"})
    new_model("admitted", seed=64, config=held)
    clients = per_replica + 16
    barrier = threading.Barrier(clients)

    def one(_: int) -> tuple[int, float, str | None, str]:
        session = requests.Session()
        session.get(f"{url}/v2/health/live", timeout=30)  # connect before the barrier
        barrier.wait(30)
        start = time.perf_counter()
        response = session.post(f"{url}/v2/models/admitted/infer", data=json.dumps(BODY).encode(), timeout=60,
                                headers={"Content-Type": "application/json"})
        return response.status_code, time.perf_counter() - start, response.headers.get("Retry-After"), response.text

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(clients)))
    ok = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 503]
    assert len(ok) + len(refused) == clients, [a[:2] for a in answers]
    assert refused and len(ok) <= per_replica, (len(ok), len(refused))
    for _, seconds, retry, text in refused:
        assert retry == "1" and "INFERGRID_INFLIGHT_PER_MODEL" in json.loads(text)["error"]
        assert seconds < 0.3, refused  # refused at once, not after the 0.5 s batch window
    assert post(url, "admitted", json.dumps(BODY).encode()).status_code == 200
