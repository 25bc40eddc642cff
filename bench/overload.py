"""Overload: offered load at 4x measured capacity for 60 s, open loop.

    python -m bench.overload [--out bench/results] [--factor 4] [--duration 60]

Serves ``fraud`` with a bounded queue (``dynamic_batching { default_queue_policy { max_queue_size:
128 } }``), measures its capacity closed-loop (32 connections, 10 s), then offers ``factor`` times
that rate open-loop (``bench.openloop``: requests leave on schedule whether or not earlier ones were
answered), with a 100 req/s probe beside it from a process of higher CPU priority. Ray runs on
all CPUs but the last, the generators on the last (a client machine's stand-in). Reported: answers
by status with p50/p99 (rejections are 503 + Retry-After, split into the front door's in-flight
bound, refused before the body is read, and the model's own queue bound), for the load and for
the probe, the memory of every Ray process sampled each second (bounded: no growth while the overload lasts),
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
from deployments.settings import INFLIGHT_ENV, current

sys.path.insert(0, str(ROOT / "examples"))

QUEUE_ROWS = 128


def repository(root: Path) -> Path:
    from build_repository import build_repository

    build_repository(root, only=("fraud",))
    config = root / "fraud" / "config.pbtxt"
    config.write_text(config.read_text().replace(
        "dynamic_batching { }", f"dynamic_batching {{ default_queue_policy {{ max_queue_size: {QUEUE_ROWS} }} }}"))
    return root


def serving_rss_mib() -> float:
    """Resident memory of every Ray worker/actor, raylet and GCS process on this machine."""
    total_kib = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if not (cmdline.startswith(b"ray::") or b"raylet" in cmdline or b"gcs_server" in cmdline):
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


def split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load-generator CPUs): the last CPU for the generator, the rest for Ray.

    A generator sharing the server's cores is starved exactly when the server is overloaded, and
    then measures its own lateness; on its own core it stands in for a client machine. None, None
    on a single CPU.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


PROBE_RPS = 100
PROBE_NICE = -10


def _open_loop_process(url: str, body_file: Path, rate: float, seconds: float, cpus: set[int] | None,
                       nice: int = 0) -> subprocess.Popen:
    def place() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except PermissionError:
                pass  # not root: the probe shares the generator's priority (write_results says so)

    command = [sys.executable, "-m", "bench.openloop", "--url", url, "--body", str(body_file),
               "--rate", str(rate), "--duration", str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=place)


def _result(process: subprocess.Popen) -> dict:
    output, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench.openloop exited {process.returncode}")
    return json.loads(output.strip().splitlines()[-1])


def open_loop(url: str, body_file: Path, rate: float, seconds: float, cpus: set[int] | None) -> tuple[dict, dict]:
    """(the load, a probe): the offered load, and beside it a probe of ``PROBE_RPS`` requests per
    second from a process of higher CPU priority on the same CPUs.

    The generator is itself saturated at these rates, so its latencies include its own event
    loop's delay in reading answers; the probe's loop is idle, so its latencies are what a client
    that keeps up sees of the server (its requests are admitted or refused like any other).
    """
    load = _open_loop_process(url, body_file, rate, seconds, cpus)
    probe = _open_loop_process(url, body_file, PROBE_RPS, seconds, cpus, PROBE_NICE)
    return _result(load), _result(probe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=8966)
    args = parser.parse_args()
    command = "python -m bench.overload " + " ".join(sys.argv[1:])
    server_cpus, client_cpus = split_cpus()
    if server_cpus:
        os.sched_setaffinity(0, server_cpus)  # before Ray starts: every Ray process inherits it
    with tempfile.TemporaryDirectory(prefix="infergrid-bench-") as tmp:
        workdir = Path(tmp)
        base = start_serving(repository(workdir / "repo"), args.port)
        url = f"{base}/v2/models/fraud/infer"
        body, _ = request_body("fraud", binary=False)
        body_file = workdir / "fraud.json"
        body_file.write_bytes(body)
        served(url, body_file, None, 16, 3, client_cpus)  # warm-up
        capacity = served(url, body_file, None, 32, 10, client_cpus)
        print(f"capacity: {capacity['qps']:.0f} QPS (p99 {capacity['p99_ms']:.1f} ms)", flush=True)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(samples, stop), daemon=True)
        before_mib = serving_rss_mib()
        sampler.start()
        overload, probe = open_loop(url, body_file, args.factor * capacity["qps"] - PROBE_RPS, args.duration,
                                    client_cpus)
        stop.set()
        sampler.join()
        time.sleep(2)
        after = served(url, body_file, None, 32, 10, client_cpus)
        print(json.dumps(overload), json.dumps(probe), flush=True)
        placement = (f"Ray and Serve on CPUs {sorted(server_cpus)}, load generator on CPU "
                     f"{sorted(client_cpus)}" if server_cpus else "server and load generator share the one CPU")
        write_results(Path(args.out), command, capacity, overload, probe, after, before_mib, samples, args.factor,
                      placement)
        import ray

        ray.shutdown()


def write_results(out: Path, command: str, capacity: dict, overload: dict, probe: dict, after: dict,
                  before_mib: float, samples: list[tuple[float, float]], factor: float, placement: str) -> None:
    date = time.strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    memory = [m for _, m in samples]
    half = len(memory) // 2
    admission = current().inflight_per_model
    report = {"date": date, "command": command, "machine": machine, "placement": placement,
              "queue_rows": QUEUE_ROWS, "admission_per_replica": admission, "factor": factor,
              "capacity": capacity, "overload": overload, "probe": probe, "capacity_after": after,
              "memory_mib": {"before": round(before_mib), "max": round(max(memory, default=0)),
                             "first_half_max": round(max(memory[:half], default=0)),
                             "second_half_max": round(max(memory[half:], default=0)),
                             "end": round(memory[-1]) if memory else 0}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Overload: {factor:g}x capacity, open loop ({date})", "",
             f"Command: `{command}` (machine: {machine}; {placement}). "
             f"`fraud` (one front-door replica) with `max_queue_size: {QUEUE_ROWS}`; front-door admission "
             f"{admission or 'off'} requests in flight per model (`{INFLIGHT_ENV}`).", "",
             f"- capacity before (closed loop, 32 connections, 10 s): {capacity['qps']:,.0f} QPS, "
             f"p50 {capacity['p50_ms']:.2f} ms, p99 {capacity['p99_ms']:.2f} ms",
             f"- offered: {overload['offered_rps'] + probe['offered_rps']:,.0f} req/s for {overload['duration_s']} s "
             f"(load generator {overload['offered_rps']:,.0f} + probe {probe['offered_rps']:,.0f}) "
             f"(load target {overload['target_rps']:,.0f}; sends late: {overload['late_sends']}, "
             f"p99 lateness {overload['p99_send_lateness_ms']} ms; not sent: {overload['not_sent']})",
             "", "| answer | count | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for status, row in overload["statuses"].items():
        lines.append(f"| {status} | {row['count']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    priority = f"nice {PROBE_NICE}" if os.geteuid() == 0 else "the load generator's priority (not root)"
    lines += ["", f"Probe: {probe['offered_rps']:,.0f} req/s more from a second generator at {priority} "
              "(its event loop idle, so its times are the server's, not the load generator's own backlog):", "",
              "| answer | count | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for status, row in probe["statuses"].items():
        lines.append(f"| {status} | {row['count']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    m = report["memory_mib"]
    lines += ["", f"- memory of all Ray processes: {m['before']} MiB before, max {m['first_half_max']} MiB "
              f"in the first half, max {m['second_half_max']} MiB in the second half, {m['end']} MiB at the end",
              f"- capacity after (same measurement): {after['qps']:,.0f} QPS, p99 {after['p99_ms']:.2f} ms, "
              f"errors {after['errors']}"]
    (out / "overload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
