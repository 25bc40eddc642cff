"""An open-loop HTTP load generator: requests leave at a fixed rate whether or not earlier ones were
answered (a closed loop slows down with the server and never overloads it).

Request i is due at ``start + i / rate``; it goes out on an idle keep-alive connection, or a new one
(at most ``--max-connections``; past that it counts as ``not_sent``). Prints one JSON line: the rate
achieved, counts per status, p50/p99 per status, and how late sends were.

    python -m bench.openloop --url URL --body FILE --rate 4000 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict

import numpy as np

from bench.loadgen import _request_bytes
from bench.traffic import read_response

__all__ = ["run_open_loop", "answer_kind"]

ADMISSION_MARK = b"INFERGRID_INFLIGHT_PER_MODEL"  # named in the front door's in-flight refusal


def answer_kind(status: int, body: bytes) -> str:
    """The status, with a 503 split by who refused: the front door's in-flight bound, or the model's queue."""
    if status != 503:
        return str(status)
    return "503 in-flight bound" if ADMISSION_MARK in body else "503 queue full"


async def run_open_loop(url: str, body: bytes, rate: float, duration_s: float,  # noqa: C901 - one loop, one closure
                        max_connections: int = 2048, timeout_s: float = 30.0) -> dict:
    """Offer ``rate`` requests per second for ``duration_s``; summarise what came back."""
    host, port, request = _request_bytes(url, body, None)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: dict[str, list[float]] = defaultdict(list)
    open_connections = [0]
    lateness: list[float] = []
    not_sent = [0]
    tasks: set[asyncio.Task] = set()

    async def one() -> None:
        connection = idle.pop() if idle else None
        if connection is None:
            if open_connections[0] >= max_connections:
                not_sent[0] += 1
                return
            open_connections[0] += 1
            try:
                connection = await asyncio.open_connection(host, port)
            except OSError:
                open_connections[0] -= 1
                latencies["connect_error"].append(0.0)
                return
        reader, writer = connection
        sent = time.perf_counter()
        try:
            writer.write(request)
            status, reply = await asyncio.wait_for(read_response(reader), timeout_s)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            latencies["timeout" if isinstance(exc, TimeoutError) else "closed"].append(time.perf_counter() - sent)
            writer.close()
            open_connections[0] -= 1
            return
        latencies[answer_kind(status, reply)].append(time.perf_counter() - sent)
        idle.append(connection)

    start = time.perf_counter()
    total = int(rate * duration_s)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lateness.append(-delay)
        task = asyncio.get_running_loop().create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sending_s = time.perf_counter() - start
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s + 5)
    for _, writer in idle:
        writer.close()
    summary = {}
    for status, values in sorted(latencies.items()):
        ms = np.array(values) * 1000
        summary[status] = {"count": len(values), "p50_ms": round(float(np.percentile(ms, 50)), 2),
                           "p99_ms": round(float(np.percentile(ms, 99)), 2)}
    return {"offered_rps": round(total / sending_s, 1), "target_rps": rate, "duration_s": round(sending_s, 1),
            "statuses": summary, "not_sent": not_sent[0],
            "late_sends": len(lateness), "p99_send_lateness_ms": round(float(np.percentile(lateness, 99)) * 1000, 1)
            if lateness else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="file holding the JSON request body")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-connections", type=int, default=2048)
    args = parser.parse_args()
    with open(args.body, "rb") as handle:
        body = handle.read()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run_open_loop(args.url, body, args.rate, args.duration, args.max_connections))),
          flush=True)


if __name__ == "__main__":
    main()
