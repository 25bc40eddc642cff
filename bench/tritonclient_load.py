"""Unchanged ``tritonclient`` (HTTP and gRPC) against the example ``fraud`` model, concurrency 1 to 64.

    python -m bench.tritonclient_load --out bench/results [--seconds 8] [--conns 1,4,16,64]

What a Triton user's own client code does: each of N threads holds its own
``tritonclient.http`` / ``tritonclient.grpc`` client and calls ``infer`` in a loop (one row,
binary tensors, as the clients send by default), for ``--seconds`` per (protocol, concurrency),
the protocols interleaved. The point is correctness under load, not speed: every response is
checked (status and the value against the first answer) and the run fails on any error. The
clients are Python, so on a small machine they, not the server, set the throughput; the server's
own figures under C load generators are in ``bench/results/frontdoor_servers.md`` and
``grpc_http.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.run import ROOT, start_serving

sys.path.insert(0, str(ROOT / "examples"))

ROW = np.linspace(-1.5, 1.5, 16, dtype=np.float32).reshape(1, 16)


def _client(protocol: str, url: str, grpc_address: str):
    if protocol == "http":
        import tritonclient.http as module

        return module, module.InferenceServerClient(url.removeprefix("http://"))
    import tritonclient.grpc as module

    return module, module.InferenceServerClient(grpc_address)


def _worker(protocol: str, url: str, grpc_address: str, until: float, expected: float, out: dict) -> None:
    module, client = _client(protocol, url, grpc_address)
    tensor = module.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(ROW)
    latencies, errors = [], []
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            value = float(client.infer("fraud", [tensor]).as_numpy("fraud_probability")[0, 0])
            if abs(value - expected) > 1e-5:
                errors.append(f"wrong answer {value} (expected {expected})")
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - start)
    client.close()
    with out["lock"]:
        out["latencies"].extend(latencies)
        out["errors"].extend(errors)


def run_one(protocol: str, conns: int, seconds: float, url: str, grpc_address: str, expected: float) -> dict:
    out = {"lock": threading.Lock(), "latencies": [], "errors": []}
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_worker, args=(protocol, url, grpc_address, until, expected, out))
               for _ in range(conns)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies = np.array(out["latencies"]) * 1000
    return {"protocol": protocol, "concurrency": conns, "requests": len(latencies), "errors": len(out["errors"]),
            "first_errors": out["errors"][:3], "qps": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--conns", default="1,4,16,64")
    parser.add_argument("--port", type=int, default=8141, help="HTTP port; gRPC on the next one")
    args = parser.parse_args()
    from build_repository import build_repository

    repository = build_repository(Path(tempfile.mkdtemp()) / "repo", only=("fraud",))
    grpc_port = args.port + 1
    url = start_serving(repository, args.port, grpc_port=grpc_port)
    grpc_address = f"127.0.0.1:{grpc_port}"
    module, client = _client("http", url, grpc_address)
    tensor = module.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(ROW)
    expected = float(client.infer("fraud", [tensor]).as_numpy("fraud_probability")[0, 0])
    rows = []
    for conns in [int(c) for c in args.conns.split(",")]:
        for protocol in ("http", "grpc"):  # interleaved: the same moment of a noisy machine for both
            row = run_one(protocol, conns, args.seconds, url, grpc_address, expected)
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_results(Path(args.out), rows, " ".join(["python -m bench.tritonclient_load", *sys.argv[1:]]))
    return 1 if any(r["errors"] for r in rows) else 0


def write_results(out: Path, rows: list[dict], command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg(),
               "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "tritonclient_load.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows},
                                                           indent=2))
    lines = ["# Unchanged tritonclient, HTTP and gRPC, concurrency 1 to 64 (fraud, one row per request)", "",
             f"Command: `{command}`  ", f"Machine: {machine['cores']} cores, {machine['platform']}, "
             f"{machine['date_utc']}", "",
             "| protocol | concurrency | requests | errors | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['qps']:.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines += ["", "Each thread is one client (`InferenceServerClient` per thread), Python, on the same machine as",
              "the server: the clients' own CPU bounds the rates; the point of this run is zero errors."]
    (out / "tritonclient_load.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
