"""KServe v2 over gRPC vs over HTTP JSON, the same model, side by side in one interleaved run.

    python -m bench.grpc_http --out bench/results [--seconds 10] [--rounds 3] [--conns 1,64]

Serves the example ``fraud`` model (``infergrid serve`` settings, one front-door replica) and
drives it with C load generators only: ``wrk`` for HTTP (one JSON row per request, the body
``tritonclient.http`` would send as JSON) and ``h2load`` (nghttp2) for gRPC (one
``ModelInferRequest`` per call with ``raw_input_contents``, as ``tritonclient.grpc`` sends it;
64 connections of one stream each, like 64 clients). h2load sees HTTP/2 statuses only, so each
gRPC run is checked against the server's own success counter (``nv_inference_request_success``);
p50/p99 come from h2load's per-request log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.run import ROOT, start_serving

sys.path.insert(0, str(ROOT / "examples"))

ROW = np.linspace(-1.5, 1.5, 16, dtype=np.float32).reshape(1, 16)
_WRK = re.compile(r"RESULT qps=(\S+) p50_ms=(\S+) p99_ms=(\S+) errors=(\d+) requests=(\d+)")


def grpc_frame() -> bytes:
    """One length-prefixed gRPC message: ModelInferRequest for fraud, raw contents."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="fraud")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(ROW.tobytes())
    payload = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def wrk_script(folder: Path) -> Path:
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32",
                                   "data": ROW.ravel().tolist()}]})
    script = folder / "fraud.lua"
    script.write_text(f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
function done(s, latency, requests)
  local e = s.errors
  io.write(string.format("RESULT qps=%.1f p50_ms=%.2f p99_ms=%.2f errors=%d requests=%d\\n",
    s.requests / (s.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, s.requests))
end
""")
    return script


def run_http(base: str, script: Path, conns: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                          "-s", str(script), f"{base}/v2/models/fraud/infer"], capture_output=True, text=True,
                         check=True)
    qps, p50, p99, errors, requests = _WRK.search(out.stdout).groups()
    return {"qps": float(qps), "p50_ms": float(p50), "p99_ms": float(p99), "errors": int(errors),
            "requests": int(requests)}


def success_count(base: str) -> float:
    import requests

    text = requests.get(f"{base}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nv_inference_request_success{") and 'model="fraud"' in line)


def run_grpc(base: str, target: str, frame: Path, conns: int, seconds: int, folder: Path) -> dict:
    log = folder / "h2load.log"
    before = success_count(base)
    out = subprocess.run(["h2load", "-c", str(conns), "-m", "1", "-t", "1" if conns == 1 else "2",
                          "-D", str(seconds), "-d", str(frame), "--log-file", str(log),
                          "-H", "content-type: application/grpc", "-H", "te: trailers",
                          f"http://{target}/inference.GRPCInferenceService/ModelInfer"],
                         capture_output=True, text=True, check=True)
    time.sleep(1.5)  # replicas report their counts every second
    answered = success_count(base) - before
    match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out.stdout)
    total, done, succeeded = (int(g) for g in match.groups())
    qps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out.stdout).group(1))
    durations_us = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
    log.unlink()  # h2load appends: one run's calls per log
    return {"qps": round(qps, 1), "p50_ms": round(durations_us[len(durations_us) // 2] / 1000, 2),
            "p99_ms": round(durations_us[int(len(durations_us) * 0.99)] / 1000, 2),
            "errors": total - succeeded, "requests": done, "server_successes": int(answered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", default="1,64")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install wrk nghttp2-client)")
    from build_repository import build_repository

    folder = Path(tempfile.mkdtemp(prefix="grpc-http-"))
    build_repository(folder / "repo", only=("fraud",))
    grpc_port = args.port + 1
    base = start_serving(folder / "repo", args.port, grpc_port=grpc_port)
    frame = folder / "request.bin"
    frame.write_bytes(grpc_frame())
    script = wrk_script(folder)
    conns = [int(c) for c in args.conns.split(",")]
    rows = []
    run_http(base, script, 16, 3)  # warm-up, both paths
    run_grpc(base, f"127.0.0.1:{grpc_port}", frame, 16, 3, folder)
    for round_ in range(1, args.rounds + 1):
        for kind in (("http", "grpc") if round_ % 2 else ("grpc", "http")):
            for c in conns:
                result = run_http(base, script, c, args.seconds) if kind == "http" else \
                    run_grpc(base, f"127.0.0.1:{grpc_port}", frame, c, args.seconds, folder)
                rows.append({"round": round_, "protocol": kind, "conns": c, **result})
                print(json.dumps(rows[-1]), flush=True)
    command = "python -m bench.grpc_http " + " ".join(sys.argv[1:])
    report = summarise(rows, command)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grpc_http.md").write_text(report)
        (args.out / "grpc_http.json").write_text(json.dumps(rows, indent=1))


def summarise(rows: list[dict], command: str) -> str:
    lines = [f"# KServe v2: gRPC vs HTTP JSON, same model ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Command: `{command}` ({os.cpu_count()} cores; the load generators share them with the server). "
             "Model: the example `fraud` (ONNX, 16 features, one replica, `dynamic_batching { }`). "
             "HTTP: wrk, one JSON row per request; gRPC: h2load, one `ModelInferRequest` with "
             "`raw_input_contents` per call, one stream per connection. Medians over rounds; "
             "`gRPC / HTTP`: QPS ratio paired within each round.", "",
             "| protocol | conns | QPS | p50 ms | p99 ms | errors | gRPC / HTTP |", "|---|---:|---:|---:|---:|---:|---:|"]
    for conns in sorted({r["conns"] for r in rows}):
        for kind in ("http", "grpc"):
            mine = [r for r in rows if r["protocol"] == kind and r["conns"] == conns]
            ratio = "-"
            if kind == "grpc":
                pairs = [g["qps"] / h["qps"] for g in mine for h in rows
                         if h["protocol"] == "http" and h["conns"] == conns and h["round"] == g["round"]]
                ratio = f"{np.median(pairs):.2f}"
            med = {k: float(np.median([r[k] for r in mine])) for k in ("qps", "p50_ms", "p99_ms")}
            lines.append(f"| {kind} | {conns} | {med['qps']:,.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                         f"{sum(r['errors'] for r in mine)} | {ratio} |")
    checked = [r for r in rows if r["protocol"] == "grpc"]
    lines += ["", "gRPC calls h2load counted vs successes the server counted (`nv_inference_request_success`): "
              + ", ".join(f"{r['requests']}/{r['server_successes']}" for r in checked)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
