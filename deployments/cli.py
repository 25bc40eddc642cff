"""``infergrid``: serve a model repository, or write the Serve config that does it on a cluster.

    infergrid serve  --repository DIR [--host 127.0.0.1] [--port 8000]
    infergrid config --repository DIR [-o serve_config.yaml]

``serve`` starts an embedded local Ray unless RAY_ADDRESS names a cluster to join. Ray Serve's
HAProxy ingress and throughput-optimised settings are switched on (unless already set) before
Ray starts: the default Python proxy caps a node at a few hundred requests per second.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["main", "serve_environment"]

PERFORMANCE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray starts workers at nice 15 by default; serving replicas must not yield the CPU to everything else.
    "RAY_worker_niceness": "0",
    # Batches travel endpoint -> model over gRPC; its 4 MiB default is under 8 ResNet-50 images.
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(1 << 30),
}


EMBEDDED_LOGICAL_CPUS = 16


def serve_environment() -> None:
    """Set Serve's performance switches for this process and the Ray it starts (user values win)."""
    for key, value in PERFORMANCE_ENV.items():
        os.environ.setdefault(key, value)


def _start_ray(host: str, port: int) -> tuple[bool, str | None]:
    import ray
    from ray import serve

    embedded = not os.environ.get("RAY_ADDRESS")
    if embedded:
        # Replicas reserve fractional logical CPUs; on a small machine a repository of many models
        # would otherwise wait forever for CPUs it does not really need. Threads are set per replica.
        context = ray.init(address="local", num_cpus=max(os.cpu_count() or 1, EMBEDDED_LOGICAL_CPUS),
                           include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                           _node_ip_address="127.0.0.1")
    else:
        context = ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    dashboard = getattr(context, "dashboard_url", None)
    return embedded, (f"http://{dashboard}" if dashboard and not dashboard.startswith("http") else dashboard)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every model in the repository until Ctrl-C or SIGTERM."""
    serve_environment()
    from ray import serve

    from deployments.app import deploy_repository
    from deployments.names import SERVER_APP, endpoint_app, version_app

    repository = Path(args.repository).resolve()
    embedded, dashboard = _start_ray(args.host, args.port)
    index = deploy_repository(repository)
    base = f"http://{args.host}:{args.port}"
    print(f"infergrid serving {repository}", flush=True)
    for name, entry in sorted(index.items()):
        state = f"UNAVAILABLE: {entry['reason']}" if entry["reason"] else f"versions {entry['versions']}"
        print(f"  {name:<16} {base}/v2/models/{name}/infer   ({state})")
    print(f"  health           {base}/v2/health/ready")
    print(f"  Ray dashboard    {dashboard or 'not started'}")
    print("READY (Ctrl-C to stop)", flush=True)
    _wait_for_signal()
    print("shutting down ...", flush=True)
    if not embedded:  # an embedded Ray goes down whole below; serve.shutdown() would wait out draining
        for name, entry in index.items():
            for app in [endpoint_app(name)] + [version_app(name, v) for v in entry["versions"]]:
                serve.delete(app, _blocking=False)
        serve.delete(SERVER_APP, _blocking=False)
    import ray

    ray.shutdown()
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Write a Serve config (for ``serve deploy`` / ``serve run``) for a repository."""
    import yaml

    from deployments.serve_config import repository_serve_config

    config = repository_serve_config(Path(args.repository).resolve(), args.host, args.port)
    text = yaml.safe_dump(config, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infergrid`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="infergrid", description="Serve a Triton-layout model repository on Ray Serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (("serve", cmd_serve, "serve a repository"),
                             ("config", cmd_config, "print a Serve config for a repository")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--repository", required=True, help="model repository folder")
        p.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
        p.set_defaults(func=func)
        if name == "config":
            p.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
