"""Overload: offered load at 4x measured capacity for 60 s, open loop.

    python -m bench.overload [--out bench/results] [--factor 4] [--duration 60]

Serves ``fraud`` with a bounded queue (``dynamic_batching { default_queue_policy { max_queue_size:
128 } }``), measures its capacity closed-loop (32 connections, 10 s), then offers ``factor`` times
that rate open-loop (``bench.openloop``: requests leave on schedule whether or not earlier ones were
answered). Reported: answers by status with p50/p99 (rejections are 503 + Retry-After), the memory
of every Ray and HAProxy process sampled each second (bounded: no growth while the overload lasts),
and the capacity measured again afterwards (the server stayed up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.run import ROOT, request_body, served, start_serving

sys.path.insert(0, str(ROOT / "examples"))

QUEUE_ROWS = 128


def repository(root: Path) -> Path:
    from build_repository import build_repository

    build_repository(root, only=("fraud",))
    config = root / "fraud" / "config.pbtxt"
    config.write_text(config.read_text().replace(
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
        "dynamic_batching { max_queue_delay_microseconds: 2000 "
        f"default_queue_policy {{ max_queue_size: {QUEUE_ROWS} }} }}"))
    return root


def serving_rss_mib() -> float:
    """Resident memory of every Ray worker/actor, raylet, GCS and HAProxy process on this machine."""
    total_kib = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if not (cmdline.startswith(b"ray::") or b"raylet" in cmdline or b"gcs_server" in cmdline
                    or b"haproxy" in cmdline):
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def sample_memory(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    start = time.monotonic()
    while not stop.wait(1.0):
        samples.append((time.monotonic() - start, serving_rss_mib()))


def open_loop(url: str, body_file: Path, rate: float, seconds: float) -> dict:
    command = [sys.executable, "-m", "bench.openloop", "--url", url, "--body", str(body_file),
               "--rate", str(rate), "--duration", str(seconds)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=8966)
    args = parser.parse_args()
    command = "python -m bench.overload " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="infergrid-bench-") as tmp:
        workdir = Path(tmp)
        base = start_serving(repository(workdir / "repo"), args.port)
        url = f"{base}/v2/models/fraud/infer"
        body, _ = request_body("fraud", binary=False)
        body_file = workdir / "fraud.json"
        body_file.write_bytes(body)
        served(url, body_file, None, 16, 3)  # warm-up
        capacity = served(url, body_file, None, 32, 10)
        print(f"capacity: {capacity['qps']:.0f} QPS (p99 {capacity['p99_ms']:.1f} ms)", flush=True)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(samples, stop), daemon=True)
        before_mib = serving_rss_mib()
        sampler.start()
        overload = open_loop(url, body_file, args.factor * capacity["qps"], args.duration)
        stop.set()
        sampler.join()
        time.sleep(2)
        after = served(url, body_file, None, 32, 10)
        print(json.dumps(overload), flush=True)
        write_results(Path(args.out), command, capacity, overload, after, before_mib, samples, args.factor)
        import ray

        ray.shutdown()


def write_results(out: Path, command: str, capacity: dict, overload: dict, after: dict, before_mib: float,
                  samples: list[tuple[float, float]], factor: float) -> None:
    date = time.strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    memory = [m for _, m in samples]
    half = len(memory) // 2
    report = {"date": date, "command": command, "machine": machine, "queue_rows": QUEUE_ROWS, "factor": factor,
              "capacity": capacity, "overload": overload, "capacity_after": after,
              "memory_mib": {"before": round(before_mib), "max": round(max(memory, default=0)),
                             "first_half_max": round(max(memory[:half], default=0)),
                             "second_half_max": round(max(memory[half:], default=0)),
                             "end": round(memory[-1]) if memory else 0}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Overload: {factor:g}x capacity, open loop ({date})", "",
             f"Command: `{command}` (machine: {machine}; load generator on the same machine). "
             f"`fraud` with `max_queue_size: {QUEUE_ROWS}`.", "",
             f"- capacity before (closed loop, 32 connections, 10 s): {capacity['qps']:,.0f} QPS, "
             f"p50 {capacity['p50_ms']:.2f} ms, p99 {capacity['p99_ms']:.2f} ms",
             f"- offered: {overload['offered_rps']:,.0f} req/s for {overload['duration_s']} s "
             f"(target {overload['target_rps']:,.0f}; sends late: {overload['late_sends']}, "
             f"p99 lateness {overload['p99_send_lateness_ms']} ms; not sent: {overload['not_sent']})",
             "", "| answer | count | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for status, row in overload["statuses"].items():
        lines.append(f"| {status} | {row['count']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    m = report["memory_mib"]
    lines += ["", f"- memory of all Ray + HAProxy processes: {m['before']} MiB before, max {m['first_half_max']} MiB "
              f"in the first half, max {m['second_half_max']} MiB in the second half, {m['end']} MiB at the end",
              f"- capacity after (same measurement): {after['qps']:,.0f} QPS, p99 {after['p99_ms']:.2f} ms, "
              f"errors {after['errors']}"]
    (out / "overload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
