"""What infergrid measures, kept per replica and merged for the whole cluster. Pure: no Ray.

Every replica that serves requests (model endpoints, ensembles and pipelines, the controller)
records into one ``Recorder``: plain dict increments on the request path, no locks, no
Prometheus objects. A reporter (``deployments.observability.hub``) sends the recorder's cumulative
``snapshot`` to the cluster's metrics hub every second; ``/metrics`` and Triton's statistics
extension render the hub's merge of every replica's snapshot. So the numbers cover every replica on
every node, and a replica that goes away keeps its counts (the hub folds them in).

Names: Triton's ``nv_inference_*`` with labels ``model`` and ``version`` (a Triton dashboard works
unchanged), plus ``infergrid_*`` for what Triton does not have.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["METRICS", "MetricSpec", "Recorder", "Series", "merge_snapshots", "render_prometheus", "triton_statistics",
           "FAILURE_REASONS", "failure_reason"]

# Triton's failure reasons (newer releases label nv_inference_request_failure with one of them).
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MV = ("model", "version")


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family."""

    name: str
    kind: str  # counter | gauge | histogram; "triton" = a Triton counter (see _families)
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("nv_inference_request_success", "triton", "Number of successful inference requests", MV),
    MetricSpec("nv_inference_request_failure", "triton", "Number of failed inference requests", (*MV, "reason")),
    MetricSpec("nv_inference_count", "triton", "Number of inferences performed (rows of a batch each count)", MV),
    MetricSpec("nv_inference_exec_count", "triton", "Number of model executions (batches) performed", MV),
    MetricSpec("nv_inference_pending_request_count", "gauge",
               "Requests received and not yet answered (queued or executing)", MV),
    MetricSpec("nv_inference_request_duration_us", "triton",
               "Cumulative request duration in microseconds, from the router to its answer", MV),
    MetricSpec("nv_inference_queue_duration_us", "triton",
               "Cumulative time requests waited in the dynamic batch queue, in microseconds", MV),
    MetricSpec("nv_inference_compute_infer_duration_us", "triton",
               "Cumulative time of the batches requests ran in, in microseconds (model replica call)", MV),
    MetricSpec("infergrid_request_duration_seconds", "histogram", "Inference request latency", MV,
               LATENCY_BUCKETS_S),
    MetricSpec("infergrid_batch_size", "histogram", "Rows per executed batch", MV, BATCH_BUCKETS),
    MetricSpec("infergrid_queue_depth", "gauge", "Rows waiting in the dynamic batch queues of a model", ("model",)),
    MetricSpec("infergrid_model_load_duration_seconds", "gauge",
               "Seconds the last load of a version took (deploy, load, warm-up)", MV),
    MetricSpec("infergrid_model_load_failures", "counter", "Versions that failed to load or warm up", MV),
    MetricSpec("infergrid_model_replicas", "gauge", "Live replicas of a model version (fixed or autoscaled)", MV),
    MetricSpec("infergrid_model_replicas_max", "gauge",
               "The most replicas a version may run (instance_group count, or autoscaling.max_replicas)", MV),
    MetricSpec("infergrid_replica_count_changes", "counter",
               "Times a version's running replica count went up or down (autoscaling, a resize, a lost replica)",
               (*MV, "direction")),
    MetricSpec("infergrid_traffic_guard_events", "counter", "Traffic guard decisions: trip (weight set to 0) "
               "or step (the next step of the schedule)", ("model", "version", "event")),
    MetricSpec("infergrid_shadow_requests", "counter", "Shadow copies of requests, by outcome (compared, failed, "
               "timeout, dropped)", ("model", "primary", "shadow", "outcome")),
    MetricSpec("infergrid_shadow_agreements", "counter", "Shadow copies whose decision agreed with the primary's",
               ("model", "primary", "shadow")),
    MetricSpec("infergrid_shadow_abs_diff_sum", "counter",
               "Sum over compared shadow copies of the largest absolute output difference", ("model", "primary", "shadow")),
    MetricSpec("infergrid_gpu_utilization", "gauge", "GPU utilisation, 0..1", ("device",)),
    MetricSpec("infergrid_gpu_memory_used_bytes", "gauge", "GPU memory in use on the device", ("device",)),
    MetricSpec("infergrid_gpu_memory_total_bytes", "gauge", "GPU memory on the device", ("device",)),
    MetricSpec("infergrid_gpu_memory_fragmentation", "gauge",
               "Reserved but unallocated over reserved memory of the framework's allocator, 0..1", ("device",)),
    MetricSpec("infergrid_gpu_power_watts", "gauge", "GPU power draw in watts (NVML)", ("device",)),
    # Triton's own GPU metrics, under its names and label, so a Triton dashboard's GPU panels fill.
    MetricSpec("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)", ("gpu_uuid",)),
    MetricSpec("nv_gpu_memory_total_bytes", "gauge", "GPU total memory, in bytes", ("gpu_uuid",)),
    MetricSpec("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes", ("gpu_uuid",)),
    MetricSpec("nv_gpu_power_usage", "gauge", "GPU power usage in watts", ("gpu_uuid",)),
)}
_LAST_INFERENCE = "last_inference_ms"  # kept for Triton's statistics, not exported


def failure_reason(status: int) -> str:
    """Triton's reason for a failed request, from the HTTP status it got."""
    if status in (503, 504):  # not ready, queue full, timed out
        return "REJECTED"
    if status >= 500:
        return "BACKEND"
    return "OTHER"


class Series:
    """One (model, version)'s request-path numbers: plain attributes, so a request costs a few adds."""

    __slots__ = ("labels", "success", "rows", "duration_us", "queue_us", "compute_us", "pending", "queued",
                 "last_ms", "latency", "executions", "batch_rows", "per_size")

    def __init__(self, labels: tuple[str, str]) -> None:
        self.labels = labels
        self.success = self.rows = self.duration_us = self.queue_us = self.compute_us = 0.0
        self.pending = self.queued = 0
        self.last_ms = 0
        self.latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.executions = 0
        self.batch_rows = [0] * (len(BATCH_BUCKETS) + 1)
        self.per_size: dict[int, list[float]] = {}  # rows -> [batches, compute ns]

    def succeeded(self, rows: int, duration_s: float, queue_s: float, compute_s: float, now_ms: int) -> None:
        """One answered request."""
        self.success += 1
        self.rows += rows
        self.duration_us += duration_s * 1e6
        self.queue_us += queue_s * 1e6
        self.compute_us += compute_s * 1e6
        self.latency[bisect.bisect_left(LATENCY_BUCKETS_S, duration_s)] += 1
        self.last_ms = now_ms

    def executed(self, rows: int, compute_s: float) -> None:
        """One executed batch: for the exported counters and Triton's per-size ``batch_stats``."""
        self.executions += 1
        self.batch_rows[bisect.bisect_left(BATCH_BUCKETS, rows)] += 1
        row = self.per_size.get(rows)
        if row is None:
            row = self.per_size[rows] = [0, 0.0]
        row[0] += 1
        row[1] += compute_s * 1e9

    def _into(self, counters: list, gauges: list, histograms: list, batches: list) -> None:
        labels = list(self.labels)
        if self.success:
            counters += [["nv_inference_request_success", labels, self.success],
                         ["nv_inference_count", labels, self.rows],
                         ["nv_inference_request_duration_us", labels, self.duration_us],
                         ["nv_inference_queue_duration_us", labels, self.queue_us],
                         ["nv_inference_compute_infer_duration_us", labels, self.compute_us]]
            histograms.append(["infergrid_request_duration_seconds", labels,
                               [*self.latency, self.duration_us / 1e6, self.success]])
            gauges.append([_LAST_INFERENCE, labels, self.last_ms])
        if self.executions:
            counters.append(["nv_inference_exec_count", labels, self.executions])
            sizes = sum(rows * row[0] for rows, row in self.per_size.items())
            histograms.append(["infergrid_batch_size", labels, [*self.batch_rows, sizes, self.executions]])
            batches += [[*labels, rows, list(row)] for rows, row in self.per_size.items()]
        gauges.append(["nv_inference_pending_request_count", labels, self.pending])
        gauges.append(["infergrid_queue_depth", [labels[0]], self.queued])


class Recorder:
    """One replica's numbers, cumulative since it started (what a snapshot carries).

    The request path uses ``series`` (one object per model and version); everything rarer
    (failures, load times, GPU samples) goes through ``inc``/``set``.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], Series] = {}
        self._counters: dict[tuple[str, tuple[str, ...]], float] = {}
        self._gauges: dict[tuple[str, tuple[str, ...]], float] = {}

    def series(self, model: str, version: str) -> Series:
        key = (model, version)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(key)
        return found

    def inc(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        key = (name, labels)
        self._counters[key] = self._counters.get(key, 0.0) + value

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._gauges[(name, labels)] = value

    def unset(self, name: str, labels: tuple[str, ...]) -> None:
        """Drop a gauge (its model or version is gone), so /metrics stops showing it."""
        self._gauges.pop((name, labels), None)

    def failure(self, model: str, version: str, reason: str, duration_s: float) -> None:
        self.inc("nv_inference_request_failure", (model, version, reason))
        self.inc("_failure_duration_us", (model, version), duration_s * 1e6)

    def snapshot(self) -> dict:
        """Plain data for the hub: lists of [name, labels, value(s)]."""
        counters = [[n, list(key), v] for (n, key), v in self._counters.items()]
        gauges = [[n, list(key), v] for (n, key), v in self._gauges.items()]
        histograms: list = []
        batches: list = []
        for series in list(self._series.values()):
            series._into(counters, gauges, histograms, batches)
        return {"counters": counters, "gauges": gauges, "histograms": histograms, "batches": batches}


def merge_snapshots(snapshots: Iterable[Mapping], gauges_from: Iterable[Mapping] | None = None) -> dict:
    """Sum counters, histograms and batch counts over ``snapshots``; gauges over ``gauges_from``
    (the live replicas only; default: the same snapshots). The last inference time is the latest."""
    snapshots = list(snapshots)
    counters: dict[tuple, float] = {}
    histograms: dict[tuple, list[float]] = {}
    batches: dict[tuple, list[float]] = {}
    gauges: dict[tuple, float] = {}
    for snap in snapshots:
        for name, labels, value in snap.get("counters", []):
            key = (name, tuple(labels))
            counters[key] = counters.get(key, 0.0) + value
        for name, labels, row in snap.get("histograms", []):
            key = (name, tuple(labels))
            into = histograms.setdefault(key, [0.0] * len(row))
            for i, v in enumerate(row):
                into[i] += v
        for model, version, size, row in snap.get("batches", []):
            into = batches.setdefault((model, version, size), [0, 0])
            into[0] += row[0]
            into[1] += row[1]
    for snap in (snapshots if gauges_from is None else gauges_from):
        for name, labels, value in snap.get("gauges", []):
            key = (name, tuple(labels))
            # Device-wide figures are reported by every replica on the device, and the last
            # inference is a time: both take the largest; the rest (queues, in flight) add up.
            if name == _LAST_INFERENCE or name.startswith(("infergrid_gpu_", "nv_gpu_")):
                gauges[key] = max(gauges.get(key, 0), value)
            else:
                gauges[key] = gauges.get(key, 0.0) + value
    return {"counters": [[n, list(key), v] for (n, key), v in counters.items()],
            "gauges": [[n, list(key), v] for (n, key), v in gauges.items()],
            "histograms": [[n, list(key), v] for (n, key), v in histograms.items()],
            "batches": [[m, v, s, row] for (m, v, s), row in batches.items()]}


def _families(merged: Mapping) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

    by_name: dict[str, list] = {}
    for section in ("counters", "gauges", "histograms"):
        for name, labels, value in merged.get(section, []):
            if name in METRICS:
                by_name.setdefault(name, []).append((tuple(labels), value))
    for name, spec in METRICS.items():
        samples = sorted(by_name.get(name, []))
        if spec.kind == "triton":
            # Triton's counters carry no _total suffix, and prometheus-client's text format adds one
            # to every counter: so they keep Triton's exact names, typed untyped (rate() works).
            family = Metric(name, spec.help, "unknown")
            for labels, value in samples:
                family.add_sample(name, dict(zip(spec.labels, labels, strict=True)), value)
        elif spec.kind == "counter":
            family = CounterMetricFamily(name, spec.help, labels=list(spec.labels))
            for labels, value in samples:
                family.add_metric(list(labels), value)
        elif spec.kind == "gauge":
            family = GaugeMetricFamily(name, spec.help, labels=list(spec.labels))
            for labels, value in samples:
                family.add_metric(list(labels), value)
        else:
            family = HistogramMetricFamily(name, spec.help, labels=list(spec.labels))
            for labels, row in samples:
                cumulative, buckets = 0.0, []
                for bound, count in zip((*spec.buckets, float("inf")), row[:-2], strict=True):
                    cumulative += count
                    buckets.append((_bound_text(bound), cumulative))
                family.add_metric(list(labels), buckets, row[-2])
        yield family


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def render_prometheus(merged: Mapping) -> bytes:
    """The Prometheus text exposition of a merged snapshot (with ``prometheus-client``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    class _Collector:
        def collect(self) -> Iterator:
            yield from _families(merged)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def triton_statistics(merged: Mapping, model: str | None = None, version: str | None = None,
                      served: tuple[str, ...] = ()) -> dict:
    """Triton's statistics extension (``GET /v2/models[/m[/versions/v]]/stats``) from a merged snapshot.

    ``served``: the versions of ``model`` being served; as in Triton, each has an entry (zeros before
    its first request: ``perf_analyzer`` reads them before it sends one).
    """
    values: dict[tuple[str, str], dict[str, float]] = {}
    for section in ("counters", "gauges"):
        for name, labels, value in merged.get(section, []):
            if len(labels) >= 2 and labels[0] and labels[1]:
                row = values.setdefault((labels[0], labels[1]), {})
                row[name] = row.get(name, 0.0) + value
    batches: dict[tuple[str, str], list[dict]] = {}
    for m, v, size, (count, ns) in sorted(merged.get("batches", []), key=lambda b: (b[0], b[1], b[2])):
        values.setdefault((m, v), {})
        batches.setdefault((m, v), []).append({
            "batch_size": size, "compute_input": _stat(0, 0), "compute_infer": _stat(count, ns),
            "compute_output": _stat(0, 0)})
    listed = {(model, v) for v in served} if model is not None else set()
    for key in listed:
        values.setdefault(key, {})
    stats = []
    for (m, v), row in sorted(values.items(), key=lambda item: (item[0][0], -_as_int(item[0][1]))):
        if (model is not None and m != model) or (version is not None and v != str(version)):
            continue
        if (not {"nv_inference_request_success", "nv_inference_request_failure"} & set(row)
                and (m, v) not in batches and (m, v) not in listed):
            continue  # a load-time series (load duration) only
        success = row.get("nv_inference_request_success", 0)
        stats.append({
            "name": m, "version": v, "last_inference": int(row.get(_LAST_INFERENCE, 0)),
            "inference_count": int(row.get("nv_inference_count", 0)),
            "execution_count": int(row.get("nv_inference_exec_count", 0)),
            "inference_stats": {
                "success": _stat(success, row.get("nv_inference_request_duration_us", 0) * 1e3),
                "fail": _stat(row.get("nv_inference_request_failure", 0), row.get("_failure_duration_us", 0) * 1e3),
                "queue": _stat(success, row.get("nv_inference_queue_duration_us", 0) * 1e3),
                "compute_input": _stat(0, 0),
                "compute_infer": _stat(success, row.get("nv_inference_compute_infer_duration_us", 0) * 1e3),
                "compute_output": _stat(0, 0),
                "cache_hit": _stat(0, 0), "cache_miss": _stat(0, 0)},
            "batch_stats": batches.get((m, v), []),
        })
    return {"model_stats": stats}


def _stat(count: float, ns: float) -> dict:
    return {"count": int(count), "ns": int(ns)}


def _as_int(text: str) -> int:
    return int(text) if text.isdigit() else 0
