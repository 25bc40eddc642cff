"""TorchServe's metrics API (``:8082/metrics``, ``metrics_mode: prometheus``) from the same merged numbers
as ``/metrics``: one set of counters, two spellings.

    ts_inference_requests_total        requests answered (succeeded or failed), per model and version
    ts_inference_latency_microseconds  cumulative duration of the requests that succeeded, in µs
    ts_queue_latency_microseconds      cumulative time requests waited in the batch queue, in µs

Labels are TorchServe's: ``model_name``, ``model_version`` (our version number) and ``hostname``.
Pure: the text is rendered with ``prometheus-client``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from urllib.parse import parse_qs

__all__ = ["TS_METRICS", "torchserve_metrics_text", "requested_names"]

# TorchServe name -> (help, the Triton counters it adds up)
TS_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ts_inference_requests_total": ("Total number of inference requests.",
                                    ("nv_inference_request_success", "nv_inference_request_failure")),
    "ts_inference_latency_microseconds": ("Cumulative inference duration in microseconds",
                                          ("nv_inference_request_duration_us",)),
    "ts_queue_latency_microseconds": ("Cumulative queue duration in microseconds",
                                      ("nv_inference_queue_duration_us",)),
}


def requested_names(query: str) -> set[str] | None:
    """The ``?name[]=...`` filter of TorchServe's metrics API (None: every metric)."""
    names = parse_qs(query).get("name[]")
    return set(names) if names else None


def _sums(merged: Mapping, sources: tuple[str, ...]) -> dict[tuple[str, str], float]:
    sums: dict[tuple[str, str], float] = {}
    for name, labels, value in merged.get("counters", []):
        if name in sources:
            key = (str(labels[0]), str(labels[1]))  # model, version (a failure's reason is summed over)
            sums[key] = sums.get(key, 0.0) + value
    return sums


def torchserve_metrics_text(merged: Mapping, hostname: str, names: Collection[str] | None = None) -> bytes:
    """TorchServe's Prometheus text for a merged snapshot (``deployments.observability.metrics``)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric

    def families() -> Iterator:
        for name, (text, sources) in TS_METRICS.items():
            if names is not None and name not in names:
                continue
            # prometheus-client would add a second _total to a counter family's name: typed untyped, as
            # Triton's counters on /metrics, so the names are TorchServe's exactly (rate() works).
            family = Metric(name, text, "unknown")
            for (model, version), value in sorted(_sums(merged, sources).items()):
                family.add_sample(name, {"model_name": model, "model_version": version, "hostname": hostname},
                                  value)
            yield family

    class _Collector:
        def collect(self) -> Iterator:
            yield from families()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)
