"""How many calls per second grpcio's Python server answers on this machine, with no model and no Ray.

    python -m bench.grpc_ceiling [--seconds 6] [--conns 64]

The ceiling under ``bench.grpc_http``: a ``GRPCInferenceService`` with one trivial ``ServerLive``
method, served by ``grpc.aio`` on asyncio's own loop, on uvloop, and by the sync ``grpc.server``
(16 threads), each in a process of its own and driven by h2load (one stream per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

_KINDS = ("aio", "aio_uvloop", "sync")


def _servicer(sync: bool):
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    class Live(service_pb2_grpc.GRPCInferenceServiceServicer):
        if sync:
            def ServerLive(self, request, context):  # noqa: N802 - Triton's method name
                return pb.ServerLiveResponse(live=True)
        else:
            async def ServerLive(self, request, context):  # noqa: N802
                return pb.ServerLiveResponse(live=True)
    return Live(), service_pb2_grpc


def _serve(kind: str, port: int) -> None:
    import grpc

    servicer, service = _servicer(kind == "sync")
    if kind == "sync":
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        service.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def run() -> None:
        server = grpc.aio.server()
        service.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
    if kind == "aio_uvloop":
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _measure(kind: str, conns: int, seconds: int, frame: str) -> float:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_ceiling", "--serve", kind, "--port", str(port)])
    try:
        time.sleep(3)
        command = ["h2load", "-c", str(conns), "-m", "1", "-t", "2", "-D", str(seconds), "-d", frame,
                   "-H", "content-type: application/grpc", "-H", "te: trailers",
                   f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ServerLive"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        failed = int(re.search(r"(\d+) failed", out).group(1))
        if failed:
            raise RuntimeError(f"{kind}: {failed} calls failed\n{out}")
        return float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--serve", choices=_KINDS)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return
    if shutil.which("h2load") is None:
        sys.exit("h2load is not installed (apt-get install nghttp2-client)")
    from tritonclient.grpc import service_pb2
    payload = service_pb2.ServerLiveRequest().SerializeToString()
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as frame:
        frame.write(b"\x00" + struct.pack(">I", len(payload)) + payload)
    print("| server | conns | ServerLive calls/s |\n|---|---:|---:|")
    for kind in _KINDS:
        print(f"| {kind} | {args.conns} | {_measure(kind, args.conns, args.seconds, frame.name):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
