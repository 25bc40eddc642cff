"""The command line of ``infergrid``: our own flags, and ``tritonserver``'s for the same things.

A Triton user keeps the command line they run today: ``infergrid serve --model-repository DIR
--http-port 8000 --grpc-port 8001 --metrics-port 8002`` means what it means to ``tritonserver``.
Triton's spellings and ours are aliases of one option (``--model-repository`` = ``--repository``,
``--http-port`` = ``--port``, ``--http-address`` = ``--host``); Triton's booleans take its forms
(``--strict-model-config=false``, ``--exit-on-error true``, or the bare flag for true).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["build_parser", "check_args", "boolean"]

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def boolean(text: str) -> bool:
    """A Triton boolean flag value."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_boolean(parser: argparse.ArgumentParser, flag: str, default: bool, text: str) -> None:
    parser.add_argument(flag, type=boolean, nargs="?", const=True, default=default, metavar="BOOL", help=text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", "--model-repository", dest="repositories", action="append", default=[],
                   metavar="DIR", help="model repository folder (Triton: --model-repository; repeatable)")
    p.add_argument("--host", "--http-address", dest="host", default="127.0.0.1",
                   help="HTTP address (default 127.0.0.1; Triton: --http-address)")
    p.add_argument("--port", "--http-port", dest="port", type=int, default=8000,
                   help="HTTP port (default 8000; Triton: --http-port)")
    p.add_argument("--front-door-replicas", type=int, default=1, metavar="N",
                   help="front-door replicas, sharing the port with SO_REUSEPORT (default 1)")
    p.add_argument("--api-keys", metavar="FILE",
                   help='JSON object mapping each API key to its role, "inference" or "management" '
                        "(default: the INFERGRID_API_KEYS variable; none: no authentication)")
    p.add_argument("--open-endpoints", default="health,metrics,docs", metavar="GROUPS",
                   help="what answers without a key when keys are set: any of health, metrics, docs, "
                        "or none (default health,metrics,docs)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback address without API keys (a proxy in front authenticates)")


def _torchserve_flags(p: argparse.ArgumentParser) -> None:
    """TorchServe's start flags (its model store) and ports (docs/torchserve.md)."""
    p.add_argument("--model-store", "--model_store", dest="model_store", default=None, metavar="DIR",
                   help="TorchServe's model store: a folder of .mar archives (served as --models says)")
    p.add_argument("--models", action="append", default=[], metavar="all|NAME=FILE.mar,...",
                   help="TorchServe's: archives of --model-store to serve (default all)")
    p.add_argument("--ts-inference-port", "--ts_inference_port", dest="ts_inference_port", type=int, default=0,
                   help="TorchServe's inference API (/ping, /predictions/...) on this port, as TorchServe's 8080 "
                        "(default 0: off)")
    p.add_argument("--ts-metrics-port", "--ts_metrics_port", dest="ts_metrics_port", type=int, default=0,
                   help="TorchServe's metrics API (GET /metrics: ts_inference_requests_total...) on this port, as "
                        "TorchServe's 8082 (default 0: off)")
    p.add_argument("--ts-management-port", "--ts_management_port", dest="ts_management_port", type=int, default=0,
                   help="TorchServe's management API (GET|POST /models, PUT|DELETE /models/NAME...) on this port, "
                        "as TorchServe's 8081 (default 0: off)")
    p.add_argument("--enable-model-api", action="store_true",
                   help="TorchServe's: allow registering and unregistering models through the management API")
    p.add_argument("--ts-config", "--ts_config", dest="ts_config", default=None, metavar="FILE",
                   help="TorchServe's config.properties: its addresses, model store, models and token auth "
                        "(docs/torchserve.md lists the keys honoured)")


def _serve_only(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grpc-port", type=int, default=8001,
                   help="KServe v2 gRPC port (tritonclient.grpc; default 8001, 0: off)")
    p.add_argument("--grpc-address", default=None, help="gRPC address (default: the HTTP address)")
    p.add_argument("--metrics-port", type=int, default=8002,
                   help="a port that serves only /metrics, as Triton's (default 8002, 0: off); "
                        "/metrics is on the HTTP port too")
    p.add_argument("--metrics-address", default=None, help="metrics address (default: the HTTP address)")
    p.add_argument("--model-name", "--model_name", dest="model_name", default=None,
                   help="TF Serving's one-model start: serve the folder --model_base_path as this model")
    p.add_argument("--model-base-path", "--model_base_path", dest="model_base_path", default=None, metavar="DIR",
                   help="TF Serving's layout: DIR/<version>/saved_model.pb (any framework's model files work)")
    p.add_argument("--model-config-file", "--model_config_file", dest="model_config_file", default=None,
                   metavar="FILE", help="TF Serving's ModelServerConfig (text format): model_config_list with "
                                        "name, base_path, model_version_policy, version_labels")
    p.add_argument("--model-config-file-poll-wait-seconds", "--model_config_file_poll_wait_seconds",
                   dest="model_config_file_poll_wait_seconds", type=float, default=0.0, metavar="S",
                   help="TF Serving's: re-read --model_config_file every S seconds (models, policies, labels; "
                        "default 0: read at start only); needs --model-control-mode poll")
    _add_boolean(p, "--enable_batching", False, "TF Serving's: batch every model without its own dynamic_batching "
                                                "as --batching_parameters_file says")
    p.add_argument("--batching-parameters-file", "--batching_parameters_file", dest="batching_parameters_file",
                   default=None, metavar="FILE", help="TF Serving's BatchingParameters (text format)")
    _add_boolean(p, "--enable_per_model_batching_parameters", False,
                 "TF Serving's: with --enable_batching, a SavedModel folder's own batching_params.pbtxt wins")
    p.add_argument("--rest-api-port", "--rest_api_port", dest="rest_api_port", type=int, default=0,
                   help="TF Serving's REST API (/v1/models/...) on its own port, as TF Serving's 8501 "
                        "(default 0: off; /v1 is on the HTTP port too)")
    p.add_argument("--monitoring-config-file", "--monitoring_config_file", dest="monitoring_config_file",
                   default=None, metavar="FILE", help="TF Serving's MonitoringConfig (text format): "
                   "prometheus_config { enable: true path: ... } serves /metrics' numbers at that path on the REST port")
    p.add_argument("--tf-grpc-port", "--tf_grpc_port", dest="tf_grpc_port", type=int, default=0,
                   help="TF Serving's gRPC API (tensorflow.serving.PredictionService, ModelService) on this port, "
                        "as TF Serving's --port 8500 (default 0: off; on the gRPC address)")
    _torchserve_flags(p)
    _add_boolean(p, "--allow-grpc", True, "false: no gRPC server (as --grpc-port 0)")
    _add_boolean(p, "--allow-metrics", True, "false: no metrics port")
    p.add_argument("--model-control-mode", choices=("poll", "none", "explicit"), default="poll",
                   help="poll: follow the repository (default); none: load at start only; "
                        "explicit: only the load/unload API changes what is served")
    p.add_argument("--repository-poll-secs", type=float, default=1.0,
                   help="seconds between repository polls, and how long new files must be unchanged "
                        "before they load (default 1)")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="explicit mode: load this model at start ('*' for all); repeatable")
    _add_boolean(p, "--strict-model-config", False,
                 "true: every model needs a config.pbtxt with its platform or backend, inputs and outputs "
                 "(nothing is completed from the model); default false, as Triton's")
    _add_boolean(p, "--exit-on-error", False,
                 "true: stop with exit status 1 when a model fails to load at start (Triton's default is "
                 "true; infergrid's is false: the other models serve)")
    p.add_argument("--log-verbose", type=int, default=0, metavar="LEVEL", help="> 0: debug logging")


def build_parser(serve: Callable, config: Callable, models: Callable) -> argparse.ArgumentParser:
    """The ``infergrid`` parser; each sub-command's function becomes ``args.func``."""
    parser = argparse.ArgumentParser(prog="infergrid",
                                     description="Serve a Triton-layout model repository on Ray Serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (("serve", serve, "serve a repository"),
                             ("config", config, "print a Serve config for a repository")):
        p = sub.add_parser(name, help=text)
        p.set_defaults(func=func)
        _common(p)
        if name == "config":
            p.add_argument("-o", "--output", help="write here instead of stdout")
        else:
            _serve_only(p)
    m = sub.add_parser("models", help="list, load or unload models of a running server; show or change a "
                                      "model's traffic policy")
    m.add_argument("action", choices=("list", "load", "unload", "traffic", "compare"))
    m.add_argument("name", nargs="?", help="model name (load, unload, traffic, compare)")
    m.add_argument("versions", nargs="*", type=int, help="compare: the two versions")
    m.add_argument("--seconds", type=float, default=5.0, help="compare: the interval measured (default 5)")
    m.add_argument("--split", metavar="V=W,...", help="traffic: weights per version, e.g. 3=90,4=10 (docs/traffic.md)")
    m.add_argument("--sticky-header", metavar="NAME", help="traffic with --split: a header (gRPC metadata key) "
                                                          "whose value keeps a client on one version")
    m.add_argument("--sticky-parameter", metavar="NAME", help="traffic with --split: a v2 request parameter whose "
                                                             "value keeps a client on one version")
    m.add_argument("--promote", type=int, metavar="V", help="traffic: every unversioned request to V")
    m.add_argument("--rollback", action="store_true", help="traffic: restore the policy before the last change")
    m.add_argument("--clear", action="store_true", help="traffic: no policy (unversioned: the newest version)")
    m.add_argument("--url", default="http://127.0.0.1:8000", help="server address (default http://127.0.0.1:8000)")
    m.add_argument("--config", help="load: a JSON model config file that overrides config.pbtxt")
    m.add_argument("--version", type=int, help="unload: only this version")
    m.add_argument("--api-key", help="a management API key (default: the INFERGRID_API_KEY variable; "
                                     "prefer the variable: arguments show in ps)")
    m.set_defaults(func=models)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Settle what the flags say together (exits with a usage error when they disagree)."""
    if args.command not in ("serve", "config"):
        return args
    if args.command == "config" and len(args.repositories) != 1:
        parser.error("infergrid config writes a Serve config for one model repository: give --repository once "
                     f"(got {len(args.repositories)})")
    args.repository = args.repositories[0] if args.repositories else None
    if args.command == "serve":
        if bool(args.model_name) != bool(args.model_base_path):
            parser.error("--model_name and --model_base_path go together (TF Serving's one-model start)")
        if args.model_config_file and args.model_base_path:
            parser.error("--model_config_file and --model_base_path are exclusive (as in TF Serving)")
        if not args.repositories and not args.model_base_path and not args.model_config_file and \
                not args.model_store:
            parser.error("give --model-repository DIR (or TF Serving's --model_config_file, or its --model_name "
                         "and --model_base_path, or TorchServe's --model-store DIR)")
        if args.models and not args.model_store:
            parser.error("--models names archives of --model-store DIR (TorchServe's model store)")
        if args.repository_poll_secs <= 0:
            parser.error("--repository-poll-secs must be > 0")
        if not args.allow_grpc:
            args.grpc_port = 0
        if not args.allow_metrics:
            args.metrics_port = 0
        args.grpc_address = args.grpc_address or args.host
        args.metrics_address = args.metrics_address or args.host
    return args
