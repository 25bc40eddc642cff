"""Metrics cost: the same model with metrics on and off, side by side in one run.

    python -m bench.metrics [--out bench/results] [--duration 4] [--rounds 8]

Serves ``fraud`` twice, as ``infergrid serve`` does: ``fraud`` (counted: Triton's counters, the
latency and batch-size histograms, queue depth, reported to the metrics hub every second) and
``fraud_nometrics`` (``parameters { key: "metrics" value: { string_value: "false" } }``: nothing
counted or sent). At 16 and 64 connections, each round measures both back to back, in alternating
order (the machine is noisy; its speed drifts within a run), and ``/metrics`` is scraped every 5 s
during the "on" runs, as ``monitoring/prometheus.yml`` does. Reports medians, and the median of the
per-round on/off throughput ratios (each pair measured seconds apart); the target is a cost of at
most 5%.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.run import ROOT, request_body, served, start_serving

sys.path.insert(0, str(ROOT / "examples"))

CONCURRENCY = (16, 64)
SCRAPE_INTERVAL_S = 5.0


def repository(root: Path) -> Path:
    from build_repository import FRAUD_CONFIG, build_repository

    build_repository(root, only=("fraud",))
    twin = root / "fraud_nometrics"
    twin.mkdir(exist_ok=True)
    (twin / "config.pbtxt").write_text(FRAUD_CONFIG.replace('name: "fraud"', 'name: "fraud_nometrics"') +
                                       'parameters { key: "metrics" value: { string_value: "false" } }\n')
    if not (twin / "1").exists():
        (twin / "1").symlink_to(root / "fraud" / "1")
    return root


def scrape_while(base: str, stop: threading.Event) -> None:
    import requests

    while not stop.wait(SCRAPE_INTERVAL_S):
        requests.get(f"{base}/metrics", timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--port", type=int, default=8965)
    args = parser.parse_args()
    command = "python -m bench.metrics " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="infergrid-bench-") as tmp:
        workdir = Path(tmp)
        base = start_serving(repository(workdir / "repo"), args.port)
        body, _ = request_body("fraud", binary=False)
        body_file = workdir / "fraud.json"
        body_file.write_bytes(body)
        for model in ("fraud", "fraud_nometrics"):
            served(f"{base}/v2/models/{model}/infer", body_file, None, 16, 3)  # warm-up
        raw: dict[tuple[str, int], list[dict]] = {}
        for round_index in range(args.rounds):
            for connections in CONCURRENCY:
                order = ("fraud", "fraud_nometrics") if round_index % 2 == 0 else ("fraud_nometrics", "fraud")
                for model in order:
                    stop = threading.Event()
                    scraper = threading.Thread(target=scrape_while, args=(base, stop), daemon=True)
                    if model == "fraud":
                        scraper.start()
                    result = served(f"{base}/v2/models/{model}/infer", body_file, None, connections, args.duration)
                    stop.set()
                    raw.setdefault((model, connections), []).append(result)
                    print(f"round {round_index + 1} {model:16} c={connections:<3} {result['qps']:8.1f} QPS  "
                          f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}",
                          flush=True)
        write_results(Path(args.out), raw, command)
        import ray

        ray.shutdown()


def write_results(out: Path, raw: dict, command: str) -> None:
    rows = [{"model": m, "concurrency": c, **{k: statistics.median(r[k] for r in results)
                                               for k in ("qps", "p50_ms", "p99_ms")},
             "errors": sum(r["errors"] for r in results), "rounds": [round(r["qps"], 1) for r in results]}
            for (m, c), results in sorted(raw.items(), key=lambda item: (item[0][1], item[0][0]))]
    ratios = {c: statistics.median(on["qps"] / off["qps"]
                                   for on, off in zip(raw[("fraud", c)], raw[("fraud_nometrics", c)], strict=True))
              for c in CONCURRENCY}
    date = time.strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} CPUs"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"date": date, "command": command, "machine": machine,
                                                  "rows": rows, "qps_on_over_off": ratios}, indent=2))
    lines = [f"# Metrics on against off ({date})", "", f"Command: `{command}` (machine: {machine}). Medians of the "
             "rounds; `/metrics` scraped every 5 s during the metrics-on runs.", "",
             "| model | connections | QPS | p50 ms | p99 ms | errors | QPS per round |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['concurrency']} | {r['qps']:,.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['errors']} | {', '.join(map(str, r['rounds']))} |")
    lines += ["", "| connections | QPS metrics on / off (median of the per-round pairs) | cost |", "|---:|---:|---:|"]
    for c, ratio in ratios.items():
        lines.append(f"| {c} | {ratio:.3f} | {100 * (1 - ratio):.1f}% |")
    (out / "metrics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
