"""TorchServe's ``config.properties`` (``--ts-config FILE``), read as the flags it stands for.

Honoured (a flag given on the command line wins over the file, as with ``torchserve --start``):

* ``inference_address``, ``management_address``, ``metrics_address`` (``http://HOST:PORT``): TorchServe's
  three ports, on HOST (one host for the three: the inference address's)
* ``model_store``, ``load_models`` (``all`` or ``name=file.mar,...``): ``--model-store``, ``--models``
* ``models``: TorchServe's per-model JSON (``{"name": {"1.0": {"defaultVersion", "marName",
  "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout"}}}``) for the archives
  loaded at start
* ``default_workers_per_model``, ``job_queue_size`` (each version's queue bound, in requests)
* ``enable_model_api``; ``enable_token_auth`` / ``disable_token_authorization``: token auth with
  TorchServe's ``key_file.json`` (written in the working folder, as TorchServe does: ``management``,
  ``inference`` and ``API`` keys), its management and API keys holding our management role, its
  inference key the inference role

Any other key is logged once as not honoured. Java's properties syntax: ``key=value`` or
``key: value``, ``#``/``!`` comments, a trailing backslash continues a line. Pure: no Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from backends.errors import ConfigError

__all__ = ["TsProperties", "parse_properties", "read_ts_config", "apply_ts_config", "write_key_file", "HONOURED"]

logger = logging.getLogger("infergrid")

HONOURED = ("inference_address", "management_address", "metrics_address", "model_store", "load_models", "models",
            "default_workers_per_model", "job_queue_size", "enable_model_api", "enable_token_auth",
            "disable_token_authorization")
_TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class TsProperties:
    """What a ``config.properties`` says, in the terms infergrid serves it with."""

    host: str = ""
    inference_port: int = 0
    management_port: int = 0
    metrics_port: int = 0
    model_store: str = ""
    load_models: tuple[str, ...] = ()
    models: dict = field(default_factory=dict)
    default_workers: int = 0
    job_queue_size: int = 0
    enable_model_api: bool = False
    token_auth: bool = False
    ignored: tuple[str, ...] = ()


def parse_properties(text: str) -> dict[str, str]:
    """Java's ``.properties`` lines -> key/value (continuations joined, comments dropped)."""
    values: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = raw.strip() if not pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        key, value = (line[:cut], line[cut + 1:]) if cut >= 0 else (line, "")
        values[key.strip()] = value.strip()
    return values


def _address(value: str, key: str, where: str) -> tuple[str, int]:
    parsed = urlparse(value if "://" in value else f"http://{value}")
    if parsed.scheme != "http":
        raise ConfigError(f"{where}: {key}={value}: only http:// addresses (TLS is not served on TorchServe's ports)")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not port or not parsed.hostname:
        raise ConfigError(f"{where}: {key}={value}: an address is http://HOST:PORT")
    return parsed.hostname, port


def _number(values: dict[str, str], key: str, where: str) -> int:
    text = values.get(key, "")
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{where}: {key}={text}: a whole number >= 1 is needed")
    return int(text)


def read_ts_config(text: str, where: str) -> TsProperties:
    """The properties of a ``config.properties`` text.

    Raises:
        ConfigError: a bad address, number or ``models`` JSON; names the key.
    """
    values = parse_properties(text)
    ports, host = {}, ""
    for key in ("inference_address", "management_address", "metrics_address"):
        if values.get(key):
            address_host, ports[key] = _address(values[key], key, where)
            host = host or address_host
    try:
        models = json.loads(values["models"]) if values.get("models") else {}
    except ValueError as exc:
        raise ConfigError(f"{where}: models: not JSON: {exc}") from None
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ConfigError(f'{where}: models: a JSON object of {{"name": {{"version": {{settings}}}}}} is needed')
    load = tuple(part.strip() for part in values.get("load_models", "").split(",") if part.strip())
    token = values.get("enable_token_auth", "").lower() in _TRUE and \
        values.get("disable_token_authorization", "").lower() not in _TRUE
    return TsProperties(host, ports.get("inference_address", 0), ports.get("management_address", 0),
                        ports.get("metrics_address", 0), values.get("model_store", ""), load, models,
                        _number(values, "default_workers_per_model", where), _number(values, "job_queue_size", where),
                        values.get("enable_model_api", "").lower() in _TRUE, token,
                        tuple(sorted(k for k in values if k not in HONOURED)))


def write_key_file(folder: Path) -> dict[str, str]:
    """TorchServe's ``key_file.json`` (fresh keys, owner-only) -> our keys: key -> role."""
    keys = {kind: secrets.token_urlsafe(12) for kind in ("management", "inference", "API")}
    path = folder / "key_file.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({kind: {"key": key} for kind, key in keys.items()}, out, indent=2)
    logger.info("TorchServe token auth: keys written to %s", path)
    return {keys["management"]: "management", keys["inference"]: "inference", keys["API"]: "management"}


def apply_ts_config(args: argparse.Namespace) -> None:
    """Fill the TorchServe flags ``--ts-config`` names and the command line left unset.

    Raises:
        ConfigError: an unreadable or malformed file.
    """
    args.ts_host, args.ts_token_keys, args.ts_models_json = "", {}, {}
    args.ts_default_workers, args.ts_job_queue_size = 1, 0
    if not args.ts_config:
        return
    path = Path(args.ts_config)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--ts-config {path}: {exc.strerror}") from None
    props = read_ts_config(text, str(path))
    if props.ignored:
        logger.warning("%s: not honoured by infergrid: %s (docs/torchserve.md)", path, ", ".join(props.ignored))
    args.ts_inference_port = args.ts_inference_port or props.inference_port
    args.ts_management_port = args.ts_management_port or props.management_port
    args.ts_metrics_port = args.ts_metrics_port or props.metrics_port
    args.ts_host = props.host
    store = props.model_store
    args.model_store = args.model_store or (str(path.parent / store) if store and not Path(store).is_absolute()
                                            else store) or None
    args.models = args.models or list(props.load_models)
    args.enable_model_api = args.enable_model_api or props.enable_model_api
    args.ts_models_json, args.ts_job_queue_size = props.models, props.job_queue_size
    args.ts_default_workers = props.default_workers or 1
    if props.token_auth:
        args.ts_token_keys = write_key_file(Path.cwd())
