"""/metrics, Triton's statistics extension, request ids and JSON logs on the session's cluster.

Every count is checked against what the test sent, as a difference from a scrape taken before
(other tests' traffic leaves its own counts), after waiting for the replicas' next report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import requests
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from repository_helpers import BODY, config_for, wait_for

pytestmark = pytest.mark.integration

BAD_SHAPE = {"inputs": [{"name": "features", "shape": [1, 15], "datatype": "FP32", "data": [0.0] * 15}]}
TWO_ROWS = {"inputs": [{"name": "features", "shape": [2, 16], "datatype": "FP32", "data": [0.0] * 32}]}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = requests.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def post(url: str, model: str, body: dict | bytes, **headers: str) -> requests.Response:
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    return requests.post(f"{url}/v2/models/{model}/infer", headers=headers, timeout=30, **kwargs)


def test_counts_equal_what_was_sent_and_statistics_agree(url: str, new_model: Callable[..., Path]) -> None:
    new_model("metered", seed=51)
    time.sleep(1.5)  # the start-up probe's counts are reported
    before = scrape(url)
    mv = {"model": "metered", "version": "1"}
    sent = {"ok": 0, "rows": 0}
    for i in range(20):
        body = TWO_ROWS if i % 4 == 0 else BODY
        assert post(url, "metered", body).status_code == 200
        sent["ok"] += 1
        sent["rows"] += 2 if i % 4 == 0 else 1
    assert all(post(url, "metered", BAD_SHAPE).status_code == 400 for _ in range(3))
    assert all(post(url, "metered", b"{not json").status_code == 400 for _ in range(2))
    assert post(url, "explodes", {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                                "data": [0.0] * 8}]}).status_code == 500

    def settled() -> dict | None:
        now = scrape(url)
        done = value(now, "nv_inference_request_success", **mv) - value(before, "nv_inference_request_success", **mv)
        return now if done == sent["ok"] else None

    after = wait_for(settled, 15, "the replicas' report")
    delta = {name: value(after, name, **mv) - value(before, name, **mv)
             for name in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_duration_us",
                          "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us")}
    assert delta["nv_inference_count"] == sent["rows"]
    assert 1 <= delta["nv_inference_exec_count"] <= sent["rows"]
    assert delta["nv_inference_request_duration_us"] > delta["nv_inference_compute_infer_duration_us"] > 0
    assert delta["nv_inference_queue_duration_us"] > 0  # dynamic batching waits up to 2 ms a batch
    failures = value(after, "nv_inference_request_failure", **mv, reason="OTHER") - \
        value(before, "nv_inference_request_failure", **mv, reason="OTHER")
    assert failures == 5  # 3 wrong shapes (in the router) + 2 malformed bodies (before it)
    assert value(after, "nv_inference_request_failure", model="explodes", version="1", reason="BACKEND") >= 1
    assert value(after, "nv_inference_pending_request_count", **mv) == 0
    assert value(after, "infergrid_request_duration_seconds_count", **mv) - \
        value(before, "infergrid_request_duration_seconds_count", **mv) == sent["ok"]
    assert value(after, "infergrid_model_load_duration_seconds", **mv) > 0
    assert value(after, "infergrid_model_load_failures_total", model="corrupt", version="1") >= 1

    # Triton's statistics extension says the same, through Triton's own client.
    stats = triton.InferenceServerClient(url.removeprefix("http://")).get_inference_statistics("metered")
    [row] = stats["model_stats"]
    assert row["name"] == "metered" and row["version"] == "1"
    assert row["inference_stats"]["success"]["count"] == value(after, "nv_inference_request_success", **mv)
    assert row["inference_stats"]["fail"]["count"] == value(after, "nv_inference_request_failure", **mv,
                                                             reason="OTHER")
    assert row["inference_count"] == value(after, "nv_inference_count", **mv)
    assert row["execution_count"] == value(after, "nv_inference_exec_count", **mv)
    assert sum(b["compute_infer"]["count"] for b in row["batch_stats"]) == row["execution_count"]
    everything = requests.get(f"{url}/v2/models/stats", timeout=30).json()["model_stats"]
    assert {"metered", "explodes"} <= {r["name"] for r in everything}
    assert requests.get(f"{url}/v2/models/metered/versions/9/stats", timeout=30).json() == {"model_stats": []}


def test_batch_size_histogram_shows_batches_under_concurrency(url: str, new_model: Callable[..., Path]) -> None:
    new_model("busy", seed=52, config=config_for("busy", **{"dynamic_batching { ":
                                                            "dynamic_batching { max_queue_delay_microseconds: 20000"}))
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda _: post(url, "busy", BODY).status_code, range(240)))
    assert statuses == [200] * 240
    mv = {"model": "busy", "version": "1"}

    def batched() -> dict | None:
        now = scrape(url)
        return now if value(now, "nv_inference_count", **mv) >= 240 else None

    after = wait_for(batched, 15, "the replicas' report")
    batches = value(after, "infergrid_batch_size_count", **mv)
    alone = value(after, "infergrid_batch_size_bucket", **mv, le="1.0")
    assert batches - alone > 0, "no batch of more than one row"
    assert value(after, "infergrid_batch_size_sum", **mv) == value(after, "nv_inference_count", **mv)
    assert batches == value(after, "nv_inference_exec_count", **mv) < 240


def test_a_model_can_turn_metrics_off(url: str, new_model: Callable[..., Path]) -> None:
    config = config_for("quiet") + 'parameters { key: "metrics" value: { string_value: "false" } }\n'
    new_model("quiet", seed=54, config=config)
    assert post(url, "quiet", BODY).status_code == 200
    time.sleep(1.5)
    # No request series (its load time and replica counts are the controller's, and stay).
    assert not [key for key in scrape(url) if ("model", "quiet") in key[1]
                and "load" not in key[0] and "replicas" not in key[0]]


def test_gpu_series_are_absent_without_a_gpu(url: str) -> None:
    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has a GPU: tests/gpu covers it")
    text = requests.get(f"{url}/metrics", timeout=30).text
    assert "nv_inference_request_success{" in text  # the scrape works and has numbers
    assert not [line for line in text.splitlines() if line.startswith("infergrid_gpu_")]  # no fake zeros


def test_request_ids_are_echoed_and_in_the_json_logs(url: str) -> None:
    from deployments.observability.logs import log_dir

    response = post(url, "fraud", BAD_SHAPE, **{"X-Request-ID": "req-from-header-1"})
    assert response.status_code == 400 and response.headers["X-Request-ID"] == "req-from-header-1"
    response = post(url, "fraud", {**BAD_SHAPE, "id": "id-in-the-body-1"}, **{"X-Request-ID": "req-with-body-id"})
    assert response.headers["X-Request-ID"] == "req-with-body-id"
    ok = post(url, "fraud", {**BODY, "id": "id-in-the-body-2"})
    assert ok.json()["id"] == "id-in-the-body-2"
    generated = ok.headers["X-Request-ID"]
    assert generated and "," not in generated  # one id, generated
    for response in (requests.get(f"{url}/v2", timeout=30),
                     requests.get(f"{url}/v2/models/nothing_here", headers={"X-Request-ID": "r-404"}, timeout=30)):
        assert response.headers["X-Request-ID"] and "," not in response.headers["X-Request-ID"]
    assert response.headers["X-Request-ID"] == "r-404"

    def logged(request_id: str) -> Callable[[], dict | None]:
        def find() -> dict | None:
            for path in Path(log_dir()).glob("*.jsonl"):
                for line in path.read_text().splitlines():
                    record = json.loads(line)
                    if record.get("request_id") == request_id:
                        return record
            return None
        return find

    record = wait_for(logged("req-from-header-1"), 10, "the refused request's log line")
    assert record["level"] == "INFO" and "features" in record["message"] and record["component"] == "frontdoor"
    record = wait_for(logged("req-with-body-id"), 10, "the second refused request's log line")
    assert record["id"] == "id-in-the-body-1"
