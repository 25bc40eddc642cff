"""``infergrid``: serve a model repository, manage what it serves, or write a Serve config.

    infergrid serve  --repository DIR... [--host 127.0.0.1] [--port 8000] [--grpc-port 8001] [--metrics-port 8002]
                     [--front-door-replicas 1] [--model-control-mode poll|none|explicit]
                     [--repository-poll-secs 1] [--load-model NAME ...] [--strict-model-config=false]
                     [--exit-on-error=false] [--log-verbose 0]
                     [--api-keys FILE] [--open-endpoints health,metrics,docs] [--allow-unauthenticated]
    (tritonserver's spellings work too: --model-repository, --http-port, --http-address, --grpc-address,
    --metrics-address, --allow-grpc, --allow-metrics; deployments.launch.flags)
    infergrid models list|load|unload [NAME] [--url http://127.0.0.1:8000] [--api-key KEY]
    infergrid config --repository DIR [-o serve_config.yaml] [--api-keys FILE] ...

API keys (``--api-keys FILE``, else the ``INFERGRID_API_KEYS`` variable holding the same JSON object
``{"key": "inference" | "management"}``) are enforced by every front-door replica (``deployments.dataplane.auth``).
Binding anything but a loopback address with no keys is refused unless ``--allow-unauthenticated``.

``serve`` starts an embedded local Ray unless RAY_ADDRESS names a cluster to join. Clients connect
to the front door's replicas (``deployments.ingress.front_door``), not to Serve's proxy, which is
off; Serve's throughput-optimised settings are switched on (unless already set) before Ray starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from deployments.settings import API_KEYS_ENV, INFLIGHT_ENV, Settings

__all__ = ["main", "serve_environment", "is_loopback", "auth_policy", "bind_refusal"]

logger = logging.getLogger("infergrid")

PERFORMANCE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray starts workers at nice 15 by default; serving replicas must not yield the CPU to everything else.
    "RAY_worker_niceness": "0",
    # Batches travel front door -> model over gRPC; its 4 MiB default is under 8 ResNet-50 images.
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(1 << 30),
    # Every Serve application's first deployment counts as an ingress, so a swapped-out version's
    # replica would hold its CPUs, memory and GPU for Serve's 30 s drain; the front door stops
    # routing to it before it is deleted (acked routing tables), so 5 s is plenty.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
}


EMBEDDED_LOGICAL_CPUS = 16


def serve_environment() -> None:
    """Set Serve's performance switches for this process and the Ray it starts (user values win)."""
    for key, value in PERFORMANCE_ENV.items():
        os.environ.setdefault(key, value)


def _start_ray(settings: Settings) -> tuple[bool, str | None]:
    import ray
    from ray import serve

    embedded = settings.ray_address is None
    if embedded:
        # Replicas reserve fractional logical CPUs; on a small machine a repository of many models
        # would otherwise wait forever for CPUs it does not really need. Threads are set per replica.
        context = ray.init(address="local", num_cpus=max(os.cpu_count() or 1, EMBEDDED_LOGICAL_CPUS),
                           include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                           _node_ip_address="127.0.0.1")
    else:
        context = ray.init(address=settings.ray_address, log_to_driver=False)
    serve.start(proxy_location="Disabled")  # the front door's replicas listen themselves
    dashboard = getattr(context, "dashboard_url", None)
    return embedded, (f"http://{dashboard}" if dashboard and not dashboard.startswith("http") else dashboard)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_policy(args: argparse.Namespace, settings: Settings):
    """The API-key policy the flags ask for: ``--api-keys FILE``, else ``INFERGRID_API_KEYS``.

    Raises:
        ConfigError: the keys or ``--open-endpoints`` are malformed (the message never holds a key).
    """
    from deployments.dataplane.auth import AuthPolicy, parse_api_keys, parse_open_groups, read_api_keys

    if args.api_keys:
        keys = read_api_keys(Path(args.api_keys))
    elif settings.api_keys_json:
        keys = parse_api_keys(settings.api_keys_json, f"${API_KEYS_ENV}")
    else:
        keys = {}
    keys.update(getattr(args, "ts_token_keys", {}))  # TorchServe's key_file.json (--ts-config enable_token_auth)
    return AuthPolicy.from_keys(keys, parse_open_groups(args.open_endpoints))


def bind_refusal(host: str, keys: int, allow_unauthenticated: bool) -> str | None:
    """Why serving on ``host`` is refused (None: allowed): never open to a network without keys by mistake."""
    if keys or allow_unauthenticated or is_loopback(host):
        return None
    return (f"refusing to serve on {host} with no API keys: anyone who reaches it could run and unload models. "
            f"Give --api-keys FILE (or $INFERGRID_API_KEYS), or --allow-unauthenticated if a proxy in front "
            f"authenticates, or bind 127.0.0.1")


def _security_setup(args: argparse.Namespace, settings: Settings):
    """(policy, None) or (None, error message) for ``serve`` and ``config``."""
    from backends.errors import ConfigError

    try:
        policy = auth_policy(args, settings)
    except ConfigError as exc:
        return None, str(exc)
    grpc_on = getattr(args, "grpc_port", 0) or getattr(args, "tf_grpc_port", 0)
    hosts = [args.host] + ([args.grpc_address] if grpc_on else []) + [h for h in [getattr(args, "ts_host", "")] if h]
    refusals = [bind_refusal(host, len(policy.digests), args.allow_unauthenticated) for host in hosts]
    refusal = next((r for r in refusals if r), None)
    return (None, refusal) if refusal else (policy, None)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def _wait_front_door(models: list[str], timeout_s: float = 120.0) -> None:
    """Until the front door answers each available model: READY means a request now succeeds (the
    front door learns the served models from the controller a moment after the controller has them)."""
    from ray import serve

    from deployments.names import FRONT_DOOR_APP, FRONT_DOOR_DEPLOYMENT

    door = serve.get_deployment_handle(FRONT_DOOR_DEPLOYMENT, app_name=FRONT_DOOR_APP)
    # RAY_SERVE_THROUGHPUT_OPTIMIZED (serve_environment) routes handles on the caller's event loop,
    # and this thread has none: every call failed and READY waited out the whole timeout.
    door._init(_run_router_in_separate_loop=True)
    deadline = time.monotonic() + timeout_s
    waiting, problem = list(models), ""
    while waiting and time.monotonic() < deadline:
        try:
            answers = [(name, door.ready.remote(name)) for name in waiting]
            waiting = [name for name, answer in answers if not answer.result(timeout_s=30)]
        except Exception as exc:  # noqa: BLE001 - replicas still starting: ask again
            problem = f" ({type(exc).__name__}: {exc})"
            logger.debug("front door not answering yet: %s", exc)
        if waiting:
            time.sleep(0.25)
    if waiting:
        print(f"infergrid: the front door does not serve {', '.join(sorted(waiting))} yet{problem}", file=sys.stderr)


def _refuse(message: str) -> int:
    print(f"infergrid: {message}", file=sys.stderr)
    return 2


def _print_serving(args: argparse.Namespace, repository: str, models: dict, dashboard: str | None,
                   policy, per_replica: int, tf_metrics_path: str = "") -> None:
    """The start-up banner: every model's URL and state, and how the server is guarded."""
    base = f"http://{args.host}:{args.port}"
    print(f"infergrid serving {repository} (model control mode: {args.model_control_mode})", flush=True)
    for name, status in sorted(models.items()):
        state = f"UNAVAILABLE: {status.reason}" if status.reason else f"versions {list(status.versions)}"
        print(f"  {name:<16} {base}/v2/models/{name}/infer   ({state})")
    print(f"  pipelines        {base}/pipelines/<name>   (plain JSON into a Python pipeline, e.g. loan_decision)")
    rest = f", and http://{args.host}:{args.rest_api_port}/v1/..." if args.rest_api_port else ""
    print(f"  TF Serving REST  {base}/v1/models/<name>:predict{rest}")
    print(f"  health           {base}/v2/health/ready")
    print(f"  repository       {base}/v2/repository/index")
    grpc = f"{args.grpc_address}:{args.grpc_port} (KServe v2, tritonclient.grpc)" if args.grpc_port else "off"
    print(f"  gRPC             {grpc}")
    if args.tf_grpc_port:
        print(f"  TF Serving gRPC  {args.grpc_address}:{args.tf_grpc_port} (tensorflow.serving.PredictionService)")
    metrics_port = f", and http://{args.metrics_address}:{args.metrics_port}/metrics" if args.metrics_port else ""
    tf_metrics = f", and http://{args.host}:{args.rest_api_port}{tf_metrics_path}" if tf_metrics_path else ""
    print(f"  metrics          {base}/metrics{metrics_port}{tf_metrics}")
    ts_ports = [f"{what} http://{args.ts_host or args.host}:{port}" for what, port in (
        ("inference", args.ts_inference_port), ("management", args.ts_management_port),
        ("metrics", args.ts_metrics_port)) if port]
    if ts_ports:
        print(f"  TorchServe       {', '.join(ts_ports)}")
    print(f"  Ray dashboard    {dashboard or 'not started'}")
    if policy.enabled:
        roles = sorted(set(policy.digests.values()))
        print(f"  API keys         {len(policy.digests)} ({', '.join(roles)}); open without a key: "
              f"{', '.join(policy.open_groups) or 'nothing'}")
    else:
        print("  API keys         none: every endpoint is open to whoever reaches this address")
    bound = (f"{per_replica} requests of a model in flight per front-door replica, then 503"
             if per_replica else "no bound")
    print(f"  admission        {bound} ({INFLIGHT_ENV})")
    print("READY (Ctrl-C to stop)", flush=True)


def _shut_down(embedded: bool) -> None:
    import ray

    from deployments.control.client import stop_controller

    stop_controller()
    if not embedded:  # an embedded Ray goes down whole below; serve.shutdown() would wait out draining
        from ray import serve

        for name in serve.status().applications:
            serve.delete(name, _blocking=False)
    ray.shutdown()


def _model_sources(args: argparse.Namespace) -> tuple[object, str, object, str | None]:
    """What the controller serves: (its source, the name it reports, TF Serving's start, a problem or None);
    repositories, TF Serving's named models and TorchServe's unpacked archives, side by side."""
    repositories = [Path(r).resolve() for r in args.repositories]
    from deployments.launch.tfserving_start import tf_serving_start
    from deployments.launch.torchserve_start import torchserve_models

    tf, problem = tf_serving_start(args)  # TF Serving's flags and files
    ts_folders, ts_overrides, registry, ts_problem = torchserve_models(args)  # TorchServe's store, registered
    models_by_name, overrides = {**tf.folders, **ts_folders}, {**tf.overrides, **ts_overrides}
    missing = next((folder for folder in [*repositories, *models_by_name.values()] if not folder.is_dir()), None)
    problem = problem or ts_problem or (f"model repository {missing} is not a folder" if missing else None) or \
        (None if repositories or models_by_name else "nothing to serve: no repository and no model named "
                                                     "(is the model store empty?)")
    from deployments.repository.roots import RepositoryRoots

    named = "" if problem else str(RepositoryRoots(repositories, models_by_name))  # as the controller names it
    source = {"roots": repositories, "models": models_by_name, "overrides": overrides, "batching": tf.batching,
              "config_file": tf.followed, "torchserve": registry} \
        if models_by_name or tf.batching or args.model_config_file or registry else repositories
    return source, named, tf, problem


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every model in the repositories until Ctrl-C or SIGTERM."""
    from backends.errors import ConfigError
    from deployments.launch.torchserve_properties import apply_ts_config

    try:
        apply_ts_config(args)  # TorchServe's config.properties: flags the command line left unset
    except ConfigError as exc:
        return _refuse(str(exc))
    source, named, tf, problem = _model_sources(args)
    if problem:
        return _refuse(problem)
    policy, refusal = _security_setup(args, args.settings)
    if refusal:
        return _refuse(refusal)
    try:
        per_replica = args.settings.checked().inflight_per_model
    except ConfigError as exc:
        return _refuse(str(exc))
    serve_environment()
    import ray

    from deployments.applications.builders import gpu_available
    from deployments.control.client import start_controller
    from deployments.ingress.front_door import Listen

    embedded, dashboard = _start_ray(args.settings)
    listen = Listen(args.host, args.port, args.grpc_port, args.grpc_address, args.metrics_port, args.metrics_address,
                    args.rest_api_port, args.tf_grpc_port, tf.metrics_path, args.ts_inference_port,
                    args.ts_metrics_port, args.ts_management_port, args.ts_host, args.enable_model_api)
    controller = start_controller(source, args.model_control_mode, args.repository_poll_secs,
                                  args.load_model, gpu_available(), policy.to_dict() if policy.enabled else None,
                                  listen, args.front_door_replicas, args.strict_model_config)
    running = ray.get(controller.describe.remote())
    if (running.repository, running.mode) != (named, args.model_control_mode):
        print(f"infergrid: this cluster already runs a controller for {running.repository} "
              f"(mode {running.mode}); serving that", file=sys.stderr)
    if policy.enabled and not running.api_keys:
        ray.shutdown()
        return _refuse("this cluster already runs a controller without API keys; stop it first "
                       "(it would serve without the keys given)")
    models = ray.get(controller.wait_started.remote())
    failed = {name: status.reason for name, status in models.items() if status.reason and status.reason != "unloaded"}
    if failed and args.exit_on_error:
        for name, reason in sorted(failed.items()):
            print(f"infergrid: {name} failed to load: {reason}", file=sys.stderr)
        print("infergrid: --exit-on-error=true: stopping", file=sys.stderr)
        _shut_down(embedded)
        return 1
    _wait_front_door([name for name, status in models.items() if not status.reason])
    _print_serving(args, named, models, dashboard, policy, per_replica, tf.metrics_path)
    _wait_for_signal()
    print("shutting down ...", flush=True)
    _shut_down(embedded)
    return 0


def _repository_request(url: str, path: str, body: dict | None = None,
                        api_key: str | None = None, method: str = "POST") -> tuple[int, object]:
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body or {}).encode() if method == "POST" else None
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except ValueError:
            return exc.code, {"error": payload.decode(errors="replace")}
    except urllib.error.URLError as exc:  # no server there
        return 0, {"error": f"{url}: {exc.reason}"}


def cmd_models(args: argparse.Namespace) -> int:
    """``models list|load|unload|traffic|compare``: Triton's repository API (and our traffic policies) over HTTP."""
    api_key = args.api_key or args.settings.client_api_key
    if args.action in ("traffic", "compare"):
        from deployments.launch.compare_cli import compare_command
        from deployments.launch.traffic_cli import traffic_command

        return traffic_command(args, _repository_request, api_key) if args.action == "traffic" else \
            compare_command(args, api_key)
    if args.action == "list":
        status, rows = _repository_request(args.url, "/v2/repository/index", api_key=api_key)
        if status == 200:
            for row in rows:  # type: ignore[union-attr]
                print(f"{row['name']:<20} {row.get('version', '-'):>8}  {row.get('state', ''):<12} "
                      f"{row.get('reason', '')}")
            return 0
    else:
        if not args.name:
            print(f"infergrid models {args.action}: give a model name", file=sys.stderr)
            return 2
        parameters: dict = {}
        if args.action == "load" and args.config:
            parameters["config"] = Path(args.config).read_text()
        if args.action == "unload" and args.version is not None:
            parameters["version"] = args.version
        status, rows = _repository_request(args.url, f"/v2/repository/models/{args.name}/{args.action}",
                                           {"parameters": parameters} if parameters else {}, api_key)
        if status == 200:
            print(f"{args.action}ed {args.name}")
            return 0
    message = rows.get("error", rows) if isinstance(rows, dict) else rows
    print(f"infergrid models {args.action}: HTTP {status}: {message}", file=sys.stderr)
    return 1


def cmd_config(args: argparse.Namespace) -> int:
    """Write a Serve config (for ``serve deploy`` / ``serve run``) for a repository."""
    import yaml

    from deployments.applications.serve_config import repository_serve_config

    policy, refusal = _security_setup(args, args.settings)
    if refusal:
        print(f"infergrid: {refusal}", file=sys.stderr)
        return 2
    config = repository_serve_config(Path(args.repository).resolve(), args.host, args.port,
                                     policy.to_dict() if policy.enabled else None, args.front_door_replicas)
    text = yaml.safe_dump(config, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infergrid`` console script."""
    from deployments.launch.flags import build_parser, check_args

    parser = build_parser(cmd_serve, cmd_config, cmd_models)
    args = check_args(parser, parser.parse_args(argv))
    verbose = getattr(args, "log_verbose", 0) > 0
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.settings = Settings.from_environ(os.environ)  # the one read of the environment in this process
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
