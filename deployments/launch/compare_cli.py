"""``infergrid models compare NAME V1 V2 [--seconds S]``: two versions of a model side by side, from the
cluster's ``/metrics`` read twice, ``S`` seconds apart: requests per second, errors, p50 and p99 (from
the latency histogram, interpolated as Prometheus' ``histogram_quantile``), and the shadow comparison
between the two (agreement and mean largest difference) where one shadows the other.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Mapping

__all__ = ["compare_command", "parse_samples", "version_rows", "quantile"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    total = 0.0
    for (sample, pairs), value in after.items():
        if sample == name and all((key, wanted) in pairs for key, wanted in labels.items()):
            total += value - before.get((sample, pairs), 0.0)
    return total


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: q of cumulative (upper bound, count) buckets, linear within a bucket."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def version_rows(before: Samples, after: Samples, seconds: float, model: str, versions: list[int]) -> list[dict]:
    """One row per version: qps, errors, p50_ms, p99_ms over the interval."""
    rows = []
    for version in versions:
        labels = {"model": model, "version": str(version)}
        ok = _delta(before, after, "nv_inference_request_success", **labels)
        failed = _delta(before, after, "nv_inference_request_failure", **labels)
        buckets = [(float(dict(pairs)["le"]), value - before.get((name, pairs), 0.0))
                   for (name, pairs), value in after.items()
                   if name == "infergrid_request_duration_seconds_bucket" and ("model", model) in pairs
                   and ("version", str(version)) in pairs]
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        rows.append({"version": version, "qps": (ok + failed) / seconds, "errors": int(failed),
                     "p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000})
    return rows


def shadow_row(before: Samples, after: Samples, model: str, versions: list[int]) -> dict | None:
    """The shadow comparison between the two versions (either way round), or None without copies."""
    for primary, shadow in (versions, versions[::-1]):
        labels = {"model": model, "primary": str(primary), "shadow": str(shadow)}
        compared = _delta(before, after, "infergrid_shadow_requests_total", outcome="compared", **labels)
        if compared:
            return {"primary": primary, "shadow": shadow, "compared": int(compared),
                    "agreement": _delta(before, after, "infergrid_shadow_agreements_total", **labels) / compared,
                    "mean_abs_diff": _delta(before, after, "infergrid_shadow_abs_diff_sum_total", **labels) / compared,
                    "failed": int(_delta(before, after, "infergrid_shadow_requests_total", outcome="failed", **labels))}
    return None


def _table(rows: list[dict], shadow: Mapping | None) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [f"{'version':>8} {'qps':>10} {'errors':>8} {'p50 ms':>9} {'p99 ms':>9}"]
    lines += [f"{r['version']:>8} {r['qps']:>10.1f} {r['errors']:>8} {ms(r['p50_ms']):>9} {ms(r['p99_ms']):>9}"
              for r in rows]
    if shadow is not None:
        lines.append(f"shadow {shadow['shadow']} of {shadow['primary']}: {shadow['compared']} compared, agreement "
                     f"{shadow['agreement']:.1%}, mean largest difference {shadow['mean_abs_diff']:.4g}, "
                     f"{shadow['failed']} failed")
    return "\n".join(lines)


def compare_command(args: argparse.Namespace, api_key: str | None) -> int:
    """Print the comparison of ``args.versions`` (two) of ``args.name``."""
    if not args.name or len(args.versions) != 2:
        print("infergrid models compare: give a model name and two versions", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def scrape() -> Samples:
        request = urllib.request.Request(args.url.rstrip("/") + "/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return parse_samples(response.read().decode())

    try:
        before, started = scrape(), time.monotonic()
        time.sleep(args.seconds)
        after, seconds = scrape(), time.monotonic() - started
    except OSError as exc:
        print(f"infergrid models compare: {args.url}/metrics: {exc}", file=sys.stderr)
        return 1
    rows = version_rows(before, after, seconds, args.name, args.versions)
    print(_table(rows, shadow_row(before, after, args.name, args.versions)))
    return 0
