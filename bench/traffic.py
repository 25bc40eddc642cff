"""Steady closed-loop traffic that records every response: when, status, and which version answered.

Used by the hot-swap benchmark and the hot-swap tests: N keep-alive connections each send one v2
JSON infer request at a time, on an event loop in a background thread, until stopped. Every
response becomes a ``Reply`` so a test can ask "did anything fail?" and "which version answered
requests sent after time T?".

    traffic = Traffic("http://127.0.0.1:8000/v2/models/fraud/infer", body, connections=20).start()
    ...  # swap versions
    replies = traffic.stop()
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Reply", "Traffic", "percentile", "read_response"]


@dataclass(frozen=True)
class Reply:
    """One request: monotonic send and receive times, status, ``model_version`` and first output value."""

    sent: float
    received: float
    status: int
    version: str | None
    value: float | None
    error: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.received - self.sent) * 1000


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = int(head[9:12]), 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, (await reader.readexactly(length)) if length else b""


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Traffic:
    """Closed-loop load on one infer URL, in a background thread."""

    def __init__(self, url: str, body: dict, connections: int = 20, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        payload = json.dumps(body).encode()
        head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n")
        self._request = head.encode() + payload
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._connections, self._timeout_s = connections, timeout_s
        self._replies: list[Reply] = []
        self._first: dict[str, Reply] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def replies(self) -> list[Reply]:
        """Replies so far (a snapshot: a copy, so not for tight loops)."""
        return list(self._replies)

    def first_from(self, version: int | str) -> Reply | None:
        """The first successful reply ``version`` computed, if any yet (cheap: for polling)."""
        return self._first.get(str(version))

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="traffic")
        self._thread.start()
        return self

    def stop(self) -> list[Reply]:
        """Stop after the requests in flight complete; returns every reply."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout_s + 10)
        return list(self._replies)

    async def _run(self) -> None:
        await asyncio.gather(*(self._connection() for _ in range(self._connections)))

    async def _connection(self) -> None:
        reader = writer = None
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self._host, self._port)
                writer.write(self._request)
                status, body = await asyncio.wait_for(read_response(reader), self._timeout_s)
                reply = self._parse(sent, status, body)
                self._replies.append(reply)
                if reply.version is not None:
                    self._first.setdefault(reply.version, reply)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self._replies.append(Reply(sent, time.monotonic(), 0, None, None, f"{type(exc).__name__}: {exc}"))
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    @staticmethod
    def _parse(sent: float, status: int, body: bytes) -> Reply:
        received = time.monotonic()
        if status != 200:
            return Reply(sent, received, status, None, None, body[:300].decode(errors="replace"))
        payload = json.loads(body)
        data = payload["outputs"][0]["data"]
        return Reply(sent, received, status, payload.get("model_version"), float(data[0]) if data else None)
