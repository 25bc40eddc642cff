"""Serving benchmark: fraud and resnet50, dynamic batching on and off, against raw in-process speed.

    python -m bench.run [--out bench/results] [--duration 10] [--resnet-duration 20]

Starts an embedded Ray with Serve (the same settings as ``infergrid serve``), deploys the example
models twice (``<model>`` with dynamic batching, ``<model>_nobatch`` without), measures each at
concurrency 1, 16 and 64 with ``bench.loadgen`` in its own process, and measures the backends
in-process at the same batch sizes with the same thread count as a replica. Everything is measured
in one run, so the ratios compare like with like on a noisy machine. Writes ``serving.md`` and
``serving.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

CONCURRENCY = (1, 16, 64)
RAW_BATCHES = {"fraud": (1, 16, 64), "resnet50": (1, 4, 8)}
INPUTS = {"fraud": ("features", (16,)), "resnet50": ("image", (3, 224, 224))}


def bench_repository(root: Path) -> Path:
    """The example models plus ``_nobatch`` twins whose config has no dynamic_batching block."""
    from build_repository import build_repository

    build_repository(root, only=("fraud", "resnet50"))
    for model in ("fraud", "resnet50"):
        twin = root / f"{model}_nobatch"
        if twin.exists():
            shutil.rmtree(twin)
        shutil.copytree(root / model, twin)
        config = (twin / "config.pbtxt").read_text().replace(f'name: "{model}"', f'name: "{model}_nobatch"')
        lines = [line for line in config.splitlines() if not line.startswith("dynamic_batching")]
        (twin / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return root


def request_body(model: str, binary: bool) -> tuple[bytes, int | None]:
    """One row for ``model``: JSON (as wrk sends to the peers) or Triton's binary form."""
    name, shape = INPUTS[model]
    row = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    if not binary:
        body = {"inputs": [{"name": name, "shape": [1, *shape], "datatype": "FP32", "data": row.ravel().tolist()}]}
        return json.dumps(body).encode(), None
    blob = row.tobytes()
    header = json.dumps({"inputs": [{"name": name, "shape": [1, *shape], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    return header + blob, len(header)


def raw_throughput(repository: Path, model: str, seconds: float) -> dict[int, float]:
    """Rows per second of the backend alone, per batch size, with one intra-op thread (as a replica)."""
    from backends.registry import create_backend
    from deployments.repository.scan import scan_model

    entry = scan_model(repository / model)
    backend = create_backend(entry.config, entry.versions[1], threads=1)
    backend.load()
    name, shape = INPUTS[model]
    results = {}
    for batch in RAW_BATCHES[model]:
        x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
        backend.predict({name: x})
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 3:
            backend.predict({name: x})
            calls += 1
        results[batch] = calls * batch / (time.perf_counter() - start)
    backend.unload()
    return results


def served(url: str, body_file: Path, header_length: int | None, connections: int, seconds: float,
           cpus: set[int] | None = None) -> dict:
    """Closed-loop load from a ``bench.loadgen`` process (on ``cpus`` only, when given)."""
    command = [sys.executable, "-m", "bench.loadgen", "--url", url, "--body", str(body_file),
               "--connections", str(connections), "--duration", str(seconds)]
    if header_length:
        command += ["--header-length", str(header_length)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_model(base: str, model: str, binary: bool, seconds: float, workdir: Path) -> list[dict]:
    body, header_length = request_body(model.removesuffix("_nobatch"), binary)
    body_file = workdir / f"{model}.body"
    body_file.write_bytes(body)
    url = f"{base}/v2/models/{model}/infer"
    served(url, body_file, header_length, 16, 3)  # warm-up
    rows = []
    for connections in CONCURRENCY:
        result = served(url, body_file, header_length, connections, seconds)
        rows.append({"model": model, "concurrency": connections, **result})
        print(f"{model:18} c={connections:<3} {result['qps']:8.1f} QPS  p50 {result['p50_ms']:8.2f} ms  "
              f"p99 {result['p99_ms']:8.2f} ms  errors {result['errors']}", flush=True)
    return rows


async def _drive(call, concurrency: int, seconds: float) -> dict:
    """Closed loop over an async callable from ``concurrency`` tasks; QPS and latency percentiles."""
    import asyncio

    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ms = np.array(latencies) * 1000
    return {"qps": len(latencies) / (time.perf_counter() - start), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def measure_hops(model: str, seconds: float) -> list[dict]:
    """Each hop of the request path on its own, from this driver: model replica, endpoint (batched)."""
    import asyncio

    from ray import serve

    from deployments.dataplane.handles import get_model_handle
    from deployments.names import VERSION_DEPLOYMENT, parse_version_app

    name, shape = INPUTS[model]
    row = {name: np.zeros((1, *shape), np.float32)}
    [app] = [a for a in serve.status().applications if (parse_version_app(a) or ("", 0))[:2] == (model, 1)]

    async def run() -> list[dict]:
        replica = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=app)
        endpoint = get_model_handle(model)
        hops = [("handle -> model replica (1 row, unbatched)", lambda: replica.infer_batch.remote(row)),
                ("handle -> endpoint -> model replica (batched)", lambda: endpoint.infer.remote(row))]
        rows = []
        for label, call in hops:
            await _drive(call, 16, 1.0)  # warm-up
            for concurrency in (1, 64):
                result = await _drive(call, concurrency, seconds)
                rows.append({"model": model, "path": label, "concurrency": concurrency, **result})
                print(f"{label:48} c={concurrency:<3} {result['qps']:8.1f} QPS  p50 {result['p50_ms']:7.2f} ms",
                      flush=True)
        return rows

    return asyncio.run(run())


def start_serving(repository: Path, port: int, mode: str = "none", poll_secs: float = 1.0, grpc_port: int = 0) -> str:
    """An embedded Ray + Serve with a repository controller, as ``infergrid serve`` starts them."""
    from deployments.launch.cli import serve_environment

    serve_environment()
    import ray
    from ray import serve

    from deployments.control.client import start_controller
    from deployments.ingress.front_door import Listen
    from deployments.launch.cli import EMBEDDED_LOGICAL_CPUS

    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, EMBEDDED_LOGICAL_CPUS), include_dashboard=False,
             log_to_driver=False, _node_ip_address="127.0.0.1")
    serve.start(proxy_location="Disabled")
    controller = start_controller(repository, mode, poll_secs, listen=Listen("127.0.0.1", port, grpc_port))
    index = ray.get(controller.wait_started.remote())
    failed = {m: status.reason for m, status in index.items() if status.reason}
    if failed:
        raise SystemExit(f"models failed to load: {failed}")
    return f"http://127.0.0.1:{port}"


def summarise(rows: list[dict], raw: dict[str, dict[int, float]]) -> dict:
    def qps(model: str, connections: int) -> float:
        return next(r["qps"] for r in rows if r["model"] == model and r["concurrency"] == connections)

    best_raw = max(raw["resnet50"].values()) if "resnet50" in raw else None
    best_served = max((r["qps"] for r in rows if r["model"] == "resnet50"), default=None)
    return {
        "fraud_batching_gain_c64": qps("fraud", 64) / qps("fraud_nobatch", 64),
        "resnet50_served_over_raw": best_served / best_raw if best_raw and best_served else None,
    }


def write_results(out: Path, rows: list[dict], raw: dict, ratios: dict, command: str, hops: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_avg": os.getloadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "serving.json").write_text(json.dumps(
        {"command": command, "machine": machine, "served": rows, "raw_rows_per_s": raw, "hops": hops,
         "ratios": ratios}, indent=2))
    lines = [f"# Serving benchmark ({machine['date_utc']})", "", f"Command: `{command}`", "",
             f"Machine: {machine['cores']} cores, {machine['platform']}, Python {machine['python']}, "
             f"load average at the end {', '.join(f'{x:.1f}' for x in machine['load_avg'])}.", "",
             "Served over HTTP (closed loop, `bench.loadgen` in its own process; fraud sends JSON, resnet50 "
             "Triton's binary tensor form):", "",
             "| model | concurrency | QPS | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['concurrency']} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['errors']} |" for r in rows]
    lines += ["", "Raw backend in-process (one intra-op thread, as a replica has):", "",
              "| model | batch size | rows/s |", "|---|---:|---:|"]
    lines += [f"| {model} | {batch} | {value:.1f} |" for model, per in raw.items() for batch, value in per.items()]
    lines += ["", "Each hop alone (from a Python driver through DeploymentHandles, same run; compare with the "
              "HTTP rows above for the ingress hop and with the raw rows for the model):", "",
              "| model | path | concurrency | QPS | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {h['model']} | {h['path']} | {h['concurrency']} | {h['qps']:.1f} | {h['p50_ms']:.2f} | "
              f"{h['p99_ms']:.2f} |" for h in hops]
    lines += ["", "Ratios (same run):", ""]
    lines += [f"- {name}: **{value:.2f}**" for name, value in ratios.items() if value is not None]
    (out / "serving.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per fraud point")
    parser.add_argument("--resnet-duration", type=float, default=20.0, help="seconds per resnet50 point")
    parser.add_argument("--port", type=int, default=8950)
    args = parser.parse_args()
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="infergrid-bench-") as tmp:
        workdir = Path(tmp)
        repository = bench_repository(workdir / "repo")
        raw = {model: raw_throughput(repository, model, 3.0) for model in ("fraud", "resnet50")}
        print("raw:", json.dumps(raw), flush=True)
        base = start_serving(repository, args.port)
        rows = []
        for model in ("fraud", "fraud_nobatch"):
            rows += measure_model(base, model, binary=False, seconds=args.duration, workdir=workdir)
        for model in ("resnet50", "resnet50_nobatch"):
            rows += measure_model(base, model, binary=True, seconds=args.resnet_duration, workdir=workdir)
        hops = measure_hops("fraud", args.duration)
        ratios = summarise(rows, raw)
        print("ratios:", json.dumps(ratios), flush=True)
        write_results(Path(args.out), rows, raw, ratios, command, hops)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
