"""A closed-loop HTTP load generator: N keep-alive connections, each sending one request at a time.

Runs in its own process (``python -m bench.loadgen``) so its CPU use is not the server's. It speaks
just enough HTTP/1.1 (Content-Length bodies) to stay cheap, and prints one JSON line:
``{"qps", "p50_ms", "p99_ms", "errors", "requests", "duration_s"}``.

    python -m bench.loadgen --url http://127.0.0.1:8000/v2/models/fraud/infer --body body.bin \
        [--header-length N] --connections 64 --duration 10
    python -m bench.loadgen --url URL1 --body B1 --url URL2 --body B2 ...   # one call after another
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import numpy as np

from bench.traffic import read_response

__all__ = ["run_load", "run_sequence"]


def _request_bytes(url: str, body: bytes, header_length: int | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    headers = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}",
               "Content-Type: " + ("application/octet-stream" if header_length else "application/json")]
    if header_length:
        headers.append(f"Inference-Header-Content-Length: {header_length}")
    return parts.hostname or "127.0.0.1", parts.port or 80, ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def _connection(host: str, port: int, requests: list[bytes], stop_at: float, latencies: list[float],
                      errors: list[int], timeout_s: float) -> None:
    """One keep-alive connection sending ``requests`` one after another, in a loop; one latency per round."""
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            start = time.perf_counter()
            ok = True
            for request in requests:
                writer.write(request)
                status, _ = await asyncio.wait_for(read_response(reader), timeout_s)
                ok = ok and status == 200
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors[0] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors[0] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run_load(url: str, body: bytes, header_length: int | None, connections: int, duration_s: float,
                   timeout_s: float = 60.0) -> dict:
    """Drive the URL for ``duration_s`` and summarise throughput and latency."""
    return await run_sequence([(url, body, header_length)], connections, duration_s, timeout_s)


async def run_sequence(steps: list[tuple[str, bytes, int | None]], connections: int, duration_s: float,
                       timeout_s: float = 60.0) -> dict:
    """Like ``run_load``, but each round sends every (url, body, header length) in turn on one
    connection (a client that calls one model after another); a round counts once, when all
    its responses were 200. All URLs must be on one host."""
    built = [_request_bytes(url, body, header_length) for url, body, header_length in steps]
    host, port = built[0][0], built[0][1]
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter()
    stop_at = start + duration_s
    await asyncio.gather(*(_connection(host, port, [r for _, _, r in built], stop_at, latencies, errors, timeout_s)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"qps": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": errors[0], "requests": len(latencies),
            "duration_s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, action="append",
                        help="repeat --url/--body to send several requests one after another per round")
    parser.add_argument("--body", required=True, action="append", help="file holding the request body")
    parser.add_argument("--header-length", type=int, default=None, help="binary form: JSON header length")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if len(args.url) != len(args.body):
        parser.error("give one --body per --url")
    bodies = []
    for path in args.body:
        with open(path, "rb") as handle:
            bodies.append(handle.read())
    steps = [(url, body, args.header_length) for url, body in zip(args.url, bodies, strict=True)]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run_sequence(steps, args.connections, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
