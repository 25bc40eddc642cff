"""infergrid's own HTTP/1.1 listener: httptools parsing on an asyncio (uvloop) event loop.

Why not ASGI: a request here costs one parse (httptools, C), a few checks and one coroutine; an
ASGI server adds a scope dict, receive/send callables and several awaits per request, and Serve's
own ingress adds its request machinery on top (``bench/results/frontdoor_servers.md`` measures
the three side by side). What the listener does per connection:

* keep-alive (HTTP/1.1 default; ``Connection: close`` and HTTP/1.0 honoured), pipelined requests
  answered in order;
* ``precheck`` runs when the headers are complete, before the body is read: a reply from it
  (401/403, 413 by declared size, 503 overload) is sent without reading the body, and a 413 closes
  the connection so a huge body is never read;
* a body larger than ``max_body_bytes`` (no or a false Content-Length) is refused with 413 while
  it streams in.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

from deployments.dataplane.traffic import REQUEST_HEADERS, REQUEST_PARAMETERS
from deployments.ingress.http import HttpReply, json_reply

__all__ = ["HttpRequest", "HttpListener", "reuse_port_socket"]

logger = logging.getLogger("infergrid")

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_MAX_PIPELINED = 16  # requests parsed ahead of their answers before reading pauses


@dataclass
class HttpRequest:
    """One request as the listener parsed it: header names lower-cased."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True
    refused: HttpReply | None = field(default=None, repr=False)  # answered before the body was read
    admitted: Any = field(default=None, repr=False)  # what the precheck reserved for it (released once)


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]
Precheck = Callable[[HttpRequest], "HttpReply | None"]
Abandon = Callable[[HttpRequest], None]


def encode_reply(reply: HttpReply, keep_alive: bool) -> bytes:
    """The bytes of one HTTP/1.1 response."""
    head = [b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
            % (reply.status, _REASONS.get(reply.status, b"Unknown"), reply.media_type.encode(), len(reply.body))]
    for name, value in reply.headers.items():
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + reply.body


class _Connection(asyncio.Protocol):
    """One client connection: parse, hand complete requests to the handler one at a time, answer in order."""

    def __init__(self, handler: Handler, precheck: Precheck | None, abandon: Abandon | None,
                 max_body_bytes: int) -> None:
        self._handler, self._precheck, self._abandon, self._max_body = handler, precheck, abandon, max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._current: HttpRequest | None = None
        self._pending: deque[HttpRequest] = deque()
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._paused = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(json_reply({"error": "protocol upgrades are not supported"}, 400))
        except httptools.HttpParserError as exc:
            self._fail(json_reply({"error": f"malformed HTTP request: {exc}"}, 400))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()
        self._drop_unanswered()

    def _drop_unanswered(self) -> None:
        """Requests that passed the precheck but will never reach the handler (the client left)."""
        unanswered = [*self._pending, *([self._current] if self._current is not None else [])]
        self._pending.clear()
        self._current = None
        if self._abandon is not None:
            for request in unanswered:
                if request.refused is None:
                    self._abandon(request)

    # --- httptools callbacks ---
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._body_size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        request = HttpRequest(self._parser.get_method().decode("ascii", "replace"),
                              parsed.path.decode("latin-1"), (parsed.query or b"").decode("latin-1"),
                              self._headers, keep_alive=self._parser.should_keep_alive())
        if self._precheck is not None:
            request.refused = self._precheck(request)
        self._current = request
        if request.refused is not None and request.refused.status == 413:
            self._fail(request.refused)
        elif self._headers.get("expect", "").lower() == "100-continue" and request.refused is None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        request = self._current
        if request is None or request.refused is not None:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._fail(json_reply({"error": f"request body exceeds {self._max_body} bytes"}, 413))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        request, self._current = self._current, None
        if request is None or self._closing:
            return
        request.body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        self._pending.append(request)
        if len(self._pending) > _MAX_PIPELINED and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._answer())

    # --- answering ---
    async def _answer(self) -> None:
        """Answer queued requests in order (HTTP/1.1 pipelining), one at a time."""
        try:
            while self._pending and not self._closing:
                request = self._pending.popleft()
                if self._paused and len(self._pending) <= _MAX_PIPELINED // 2:
                    self._paused = False
                    self._transport.resume_reading()  # type: ignore[union-attr]
                reply = request.refused
                if reply is None:
                    try:
                        REQUEST_HEADERS.set(request.headers)  # sticky traffic keys (deployments.dataplane.traffic)
                        REQUEST_PARAMETERS.set(None)  # a v2 decoder sets the request's own
                        reply = await self._handler(request)
                    except Exception as exc:  # noqa: BLE001 - the handler renders its errors; this is a last resort
                        logger.exception("HTTP handler failed")
                        reply = json_reply({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)
                self._write(reply, request.keep_alive)
                if not request.keep_alive:
                    self._close()
                    return
        finally:
            self._worker = None

    def _write(self, reply: HttpReply, keep_alive: bool) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_reply(reply, keep_alive))

    def _fail(self, reply: HttpReply) -> None:
        """Answer at once and close: the rest of the stream cannot be trusted (or read)."""
        if self._closing:
            return
        self._write(reply, keep_alive=False)
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._drop_unanswered()
        if self._transport is not None:
            self._transport.close()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, so several front-door replicas on a node share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpListener:
    """An HTTP/1.1 server on the running loop, over a socket shared with other replicas.

    Args:
        handler: answers one complete request (it renders its own errors).
        precheck: called when the headers are complete; a reply refuses the request unread.
        abandon: called for a request that passed ``precheck`` but whose client left before the
            handler got it (what ``precheck`` reserved for it is released there).
        max_body_bytes: the largest body read at all (a model's own limit is checked in ``precheck``).
    """

    def __init__(self, handler: Handler, precheck: Precheck | None = None, abandon: Abandon | None = None,
                 max_body_bytes: int = 1 << 30) -> None:
        self._handler, self._precheck, self._abandon, self._max_body = handler, precheck, abandon, max_body_bytes
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (SO_REUSEPORT)."""
        sock = reuse_port_socket(host, port)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self._handler, self._precheck, self._abandon, self._max_body), sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
