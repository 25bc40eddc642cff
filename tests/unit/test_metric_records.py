"""The recorder, the merge across replicas, the Prometheus text and Triton's statistics: pure."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from backends.gpu import gpu_samples
from deployments.observability.metrics import (
    METRICS,
    Recorder,
    failure_reason,
    merge_snapshots,
    render_prometheus,
    triton_statistics,
)

ROOT = Path(__file__).resolve().parents[2]


def two_replicas() -> dict:
    a, b = Recorder(), Recorder()
    for recorder, rows in ((a, 1), (b, 3)):
        series = recorder.series("fraud", "1")
        series.succeeded(rows, 0.004, 0.001, 0.002, 1000 * rows)
        series.executed(rows, 0.002)
        series.pending += 1
    a.failure("fraud", "1", "OTHER", 0.0005)
    b.set("infergrid_gpu_memory_total_bytes", ("10.0.0.1:gpu0",), 80e9)
    a.set("infergrid_gpu_memory_total_bytes", ("10.0.0.1:gpu0",), 80e9)
    for recorder in (a, b):  # Triton's names, as a GPU replica's sampler sets them beside ours
        recorder.set("nv_gpu_memory_total_bytes", ("GPU-5e2c",), 80e9)
        recorder.set("nv_gpu_utilization", ("GPU-5e2c",), 0.5)
    return merge_snapshots([a.snapshot(), b.snapshot()])


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_replicas_add_up_in_triton_names() -> None:
    parsed = samples(render_prometheus(two_replicas()).decode())
    mv = (("model", "fraud"), ("version", "1"))
    assert parsed[("nv_inference_request_success", mv)] == 2
    assert parsed[("nv_inference_count", mv)] == 4
    assert parsed[("nv_inference_exec_count", mv)] == 2
    assert parsed[("nv_inference_request_failure", (("model", "fraud"), ("reason", "OTHER"), ("version", "1")))] == 1
    assert parsed[("nv_inference_pending_request_count", mv)] == 2
    assert parsed[("nv_inference_request_duration_us", mv)] == 8000
    assert parsed[("infergrid_batch_size_bucket", (("le", "1.0"), *mv))] == 1
    assert parsed[("infergrid_batch_size_bucket", (("le", "4.0"), *mv))] == 2
    assert parsed[("infergrid_batch_size_sum", mv)] == 4
    # A device's memory is reported by every replica on it: not added up.
    assert parsed[("infergrid_gpu_memory_total_bytes", (("device", "10.0.0.1:gpu0"),))] == 80e9
    assert parsed[("nv_gpu_memory_total_bytes", (("gpu_uuid", "GPU-5e2c"),))] == 80e9
    assert parsed[("nv_gpu_utilization", (("gpu_uuid", "GPU-5e2c"),))] == 0.5


def test_retired_replicas_keep_counts_but_not_gauges() -> None:
    merged = two_replicas()
    kept = merge_snapshots([merged], gauges_from=[])
    names = {name for name, _, _ in kept["gauges"]}
    assert not names and {name for name, _, _ in kept["counters"]} >= {"nv_inference_request_success"}


def test_triton_statistics_shape() -> None:
    [row] = triton_statistics(two_replicas(), "fraud")["model_stats"]
    assert row["name"] == "fraud" and row["version"] == "1" and row["last_inference"] == 3000
    assert row["inference_count"] == 4 and row["execution_count"] == 2
    assert row["inference_stats"]["success"] == {"count": 2, "ns": 8_000_000}
    assert row["inference_stats"]["fail"] == {"count": 1, "ns": 500_000}
    assert [b["batch_size"] for b in row["batch_stats"]] == [1, 3]
    assert triton_statistics(two_replicas(), "fraud", "2") == {"model_stats": []}


def test_failure_reasons() -> None:
    assert [failure_reason(s) for s in (400, 404, 500, 503)] == ["OTHER", "OTHER", "BACKEND", "REJECTED"]


def test_no_gpu_no_samples() -> None:
    assert gpu_samples("cpu") == {}


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    used = set(re.findall(r"\b((?:nv|infergrid)_[a-z_]+)\b", exprs))
    exported = set(METRICS) | {f"{n}_{s}" for n in METRICS for s in ("bucket", "sum", "count", "total")}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("requests per second", "p99", "batch size", "queue depth", "gpu utilisation", "memory",
                  "fragmentation", "replicas", "scaling"):
        assert topic in titles


def test_every_triton_gpu_name_has_a_source_and_a_spec() -> None:
    from backends.gpu import TRITON_NAMES
    from deployments.observability.metrics import METRICS

    assert set(TRITON_NAMES.values()) == {"nv_gpu_utilization", "nv_gpu_memory_total_bytes",
                                          "nv_gpu_memory_used_bytes", "nv_gpu_power_usage"}
    for ours, triton in TRITON_NAMES.items():
        assert METRICS[ours].labels == ("device",) and METRICS[triton].labels == ("gpu_uuid",)
