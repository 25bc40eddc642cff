"""Hot-swap benchmark: how fast a new version serves, and what swapping costs the traffic.

    python -m bench.hotswap [--out bench/results] [--swaps 10] [--connections 16] [--poll-secs 1]

Serves fraud and resnet50 with ``infergrid serve``'s polling controller (default poll interval),
keeps steady closed-loop traffic on fraud, and measures, in one run:

* swap time: from a version folder becoming complete (renamed into place, or its last file
  written and closed) to the first response computed by that version, for ``--swaps`` new
  versions of fraud (moved in), a few written in place, and ``--swaps`` of resnet50;
* fraud's p50/p99 latency in a steady window and during its swaps (each swap loads a replica,
  flips traffic and removes the old one), and during resnet50's swaps against a steady window
  with the same resnet50 traffic (another model loading);
* failed requests (must be zero).

Every version is built before timing starts, so a swap's time is the server's alone. Writes
``hotswap.md`` and ``hotswap.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.run import ROOT, start_serving
from bench.traffic import Reply, Traffic, percentile

sys.path.insert(0, str(ROOT / "examples"))

FRAUD_BODY = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32",
                          "data": np.linspace(-1, 1, 16).tolist()}]}
RESNET_BODY = {"inputs": [{"name": "image", "shape": [1, 3, 224, 224], "datatype": "FP32",
                           "data": np.zeros(3 * 224 * 224).tolist()}]}


def stage_versions(staging: Path, model: str, versions: range) -> None:
    """Build each version (different weights) outside the repository, ready to move in."""
    from build_repository import build_fraud, build_resnet50

    builder = build_fraud if model == "fraud" else build_resnet50
    for version in versions:
        builder(staging / model / str(version), seed=1000 + version)


def wait_first(traffic: Traffic, version: int, timeout_s: float = 120) -> Reply:
    """The first reply from ``version`` (a new version: it cannot have answered before the swap)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = traffic.first_from(version)
        if reply is not None:
            return reply
        time.sleep(0.01)
    raise SystemExit(f"version {version} never answered within {timeout_s} s")


def swap(traffic: Traffic, staged: Path, target: Path, version: int, in_place: bool) -> float:
    """Put ``staged`` at ``target``; seconds from complete to the first reply from ``version``."""
    if in_place:  # written where it lands: complete once the last file is written and closed
        target.mkdir()
        for item in staged.iterdir():
            shutil.copyfile(item, target / item.name)
        complete = time.monotonic()
    else:
        complete = time.monotonic()
        os.rename(staged, target)
    return wait_first(traffic, version).received - complete


def latency(replies: list[Reply], start: float, end: float) -> dict:
    window = [r for r in replies if start <= r.sent < end]
    ok = [r.latency_ms for r in window if r.status == 200]
    return {"requests": len(window), "failed": len(window) - len(ok), "qps": len(ok) / max(end - start, 1e-9),
            "p50_ms": percentile(ok, 50), "p99_ms": percentile(ok, 99)}


def summary(seconds: list[float]) -> dict:
    return {"n": len(seconds), "p50_s": float(np.median(seconds)), "max_s": max(seconds),
            "all_s": [round(s, 2) for s in seconds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--in-place-swaps", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--poll-secs", type=float, default=1.0)
    parser.add_argument("--steady-secs", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8960)
    args = parser.parse_args()
    command = "python -m bench.hotswap " + " ".join(sys.argv[1:])
    from build_repository import build_repository

    with tempfile.TemporaryDirectory(prefix="infergrid-hotswap-") as tmp:
        repository, staging = Path(tmp) / "repo", Path(tmp) / "staging"
        build_repository(repository, only=("fraud", "resnet50"))
        fraud_versions = range(2, 2 + args.swaps + args.in_place_swaps)
        resnet_versions = range(2, 2 + args.swaps)
        stage_versions(staging, "fraud", fraud_versions)
        stage_versions(staging, "resnet50", resnet_versions)
        print("versions staged", flush=True)
        base = start_serving(repository, args.port, mode="poll", poll_secs=args.poll_secs)
        time.sleep(2)  # the measured windows start after a settle; failures are counted over the whole run
        fraud = Traffic(f"{base}/v2/models/fraud/infer", FRAUD_BODY, args.connections).start()
        time.sleep(3)  # warm
        steady_start = time.monotonic()
        time.sleep(args.steady_secs)
        steady_end = swaps_start = time.monotonic()

        fraud_atomic, fraud_in_place = [], []
        for i, version in enumerate(fraud_versions):
            in_place = i >= args.swaps
            seconds = swap(fraud, staging / "fraud" / str(version), repository / "fraud" / str(version), version,
                           in_place)
            (fraud_in_place if in_place else fraud_atomic).append(seconds)
            print(f"fraud v{version} {'in place' if in_place else 'moved in'}: {seconds:.2f} s", flush=True)
            time.sleep(1.5)  # the old version is drained and removed inside this window
        swaps_end = time.monotonic()

        # resnet50 traffic is CPU-heavy itself: fraud's baseline for resnet50's swaps includes it.
        resnet = Traffic(f"{base}/v2/models/resnet50/infer", RESNET_BODY, 2).start()
        time.sleep(3)
        mixed_start = time.monotonic()
        time.sleep(args.steady_secs)
        mixed_end = resnet_start = time.monotonic()
        resnet_swaps = []
        for version in resnet_versions:
            seconds = swap(resnet, staging / "resnet50" / str(version), repository / "resnet50" / str(version),
                           version, in_place=False)
            resnet_swaps.append(seconds)
            print(f"resnet50 v{version}: {seconds:.2f} s", flush=True)
            time.sleep(1.5)
        resnet_end = time.monotonic()
        resnet_replies, fraud_replies = resnet.stop(), fraud.stop()
        import ray

        ray.shutdown()

    results = {
        "command": command,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg": os.getloadavg()},
        "poll_secs": args.poll_secs, "connections": args.connections,
        "swap_seconds": {"fraud (moved in)": summary(fraud_atomic), "fraud (written in place)": summary(fraud_in_place),
                         "resnet50 (moved in)": summary(resnet_swaps)},
        "fraud_latency": {"steady": latency(fraud_replies, steady_start, steady_end),
                          "during fraud swaps": latency(fraud_replies, swaps_start, swaps_end),
                          "steady, resnet50 serving too": latency(fraud_replies, mixed_start, mixed_end),
                          "during resnet50 swaps (resnet50 serving too)": latency(fraud_replies, resnet_start,
                                                                                  resnet_end)},
        "failed_requests": {"fraud": sum(r.status != 200 for r in fraud_replies),
                            "resnet50": sum(r.status != 200 for r in resnet_replies)},
    }
    steady_p99 = results["fraud_latency"]["steady"]["p99_ms"]
    results["p99_ratio_during_fraud_swaps"] = results["fraud_latency"]["during fraud swaps"]["p99_ms"] / steady_p99
    results["p99_ratio_during_resnet50_swaps"] = (
        results["fraud_latency"]["during resnet50 swaps (resnet50 serving too)"]["p99_ms"]
        / results["fraud_latency"]["steady, resnet50 serving too"]["p99_ms"])
    write_results(Path(args.out), results)
    print(json.dumps({k: results[k] for k in ("swap_seconds", "failed_requests", "p99_ratio_during_fraud_swaps",
                                              "p99_ratio_during_resnet50_swaps")}, indent=1))


def write_results(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "hotswap.json").write_text(json.dumps(results, indent=2))
    machine = results["machine"]
    lines = [f"# Hot-swap benchmark ({machine['date_utc']})", "", f"Command: `{results['command']}`", "",
             f"Machine: {machine['cores']} cores, {machine['platform']}; controller polling every "
             f"{results['poll_secs']} s; {results['connections']} closed-loop connections on fraud throughout "
             f"(JSON, one row per request).", "",
             "Swap time, from the version folder being complete to the first response from that version:", "",
             "| swap | n | p50 s | max s | each (s) |", "|---|---:|---:|---:|---|"]
    for name, s in results["swap_seconds"].items():
        if s["n"]:
            lines.append(f"| {name} | {s['n']} | {s['p50_s']:.2f} | {s['max_s']:.2f} | "
                         f"{', '.join(f'{x:.2f}' for x in s['all_s'])} |")
    lines += ["", "fraud latency, same run:", "", "| window | requests | failed | QPS | p50 ms | p99 ms |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, w in results["fraud_latency"].items():
        lines.append(f"| {name} | {w['requests']} | {w['failed']} | {w['qps']:.0f} | {w['p50_ms']:.2f} | "
                     f"{w['p99_ms']:.2f} |")
    lines += ["", f"- failed requests: fraud {results['failed_requests']['fraud']}, "
                  f"resnet50 {results['failed_requests']['resnet50']}",
              f"- fraud p99 during its swaps / steady p99: **{results['p99_ratio_during_fraud_swaps']:.2f}**",
              f"- fraud p99 during resnet50 swaps / steady p99 with resnet50 serving: "
              f"**{results['p99_ratio_during_resnet50_swaps']:.2f}** (another model loading)"]
    (out / "hotswap.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
