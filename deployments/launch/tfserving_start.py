"""What ``infergrid serve`` takes from TF Serving's flags: the models it names, its batching, the
config file it follows and where its REST port serves Prometheus text.

    --model_name NAME --model_base_path DIR        one model, as ``tensorflow_model_server`` serves it
    --model_config_file FILE                       ModelServerConfig (deployments.repository.tfserving_config)
    --model_config_file_poll_wait_seconds S        re-read FILE every S seconds (controller-side)
    --enable_batching [--batching_parameters_file] BatchingParameters (deployments.repository.tfserving_batching)
    --enable_per_model_batching_parameters         a SavedModel's own batching_params.pbtxt over that
    --monitoring_config_file FILE                  MonitoringConfig (deployments.repository.tfserving_monitoring)

Every file is read here, before Ray starts, so a bad one refuses the start with its line and column.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.errors import ConfigError

__all__ = ["TfServingStart", "tf_serving_start"]


@dataclass(frozen=True)
class TfServingStart:
    """TF Serving's flags, read: models named one by one (name -> folder, name -> ModelOverride), the
    batching of every model without its own (a TfBatching or None), the config file the controller
    follows (None: read at start only) and the REST port's Prometheus path ("" : none)."""

    folders: dict[str, Path] = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    batching: object = None
    followed: dict | None = None
    metrics_path: str = ""


def tf_serving_start(args: argparse.Namespace) -> tuple[TfServingStart, str | None]:
    """Read TF Serving's flags in ``args``: (what they ask for, a problem that refuses the start or None)."""
    try:
        folders, overrides = _named_models(args)
        return TfServingStart(folders, overrides, _batching(args), _followed_config_file(args),
                              _metrics_path(args)), None
    except ConfigError as exc:
        return TfServingStart(), str(exc)


def _named_models(args: argparse.Namespace) -> tuple[dict[str, Path], dict]:
    """From --model_name + --model_base_path or from --model_config_file."""
    if args.model_base_path:
        return {args.model_name: Path(args.model_base_path).resolve()}, {}
    if not args.model_config_file:
        return {}, {}
    if args.model_config_file_poll_wait_seconds > 0 and args.model_control_mode != "poll":
        raise ConfigError(f"--model_config_file_poll_wait_seconds needs --model-control-mode poll, "
                          f"not {args.model_control_mode}")
    from deployments.repository.tfserving_config import read_model_config_file

    configured = read_model_config_file(Path(args.model_config_file))
    return configured.folders, configured.overrides


def _followed_config_file(args: argparse.Namespace) -> dict | None:
    """--model_config_file_poll_wait_seconds > 0: the controller re-reads --model_config_file that often
    (relative base paths from this working directory, as at start)."""
    if not args.model_config_file or args.model_config_file_poll_wait_seconds <= 0:
        return None
    return {"path": str(Path(args.model_config_file).resolve()), "relative_to": str(Path.cwd()),
            "poll_s": args.model_config_file_poll_wait_seconds}


def _batching(args: argparse.Namespace) -> object:
    """--enable_batching: its TfBatching (TF Serving's defaults without --batching_parameters_file) or None;
    per model with --enable_per_model_batching_parameters."""
    if not args.enable_batching:
        if args.enable_per_model_batching_parameters:
            raise ConfigError("--enable_per_model_batching_parameters needs --enable_batching (as in TF Serving)")
        return None
    from deployments.repository.tfserving_batching import parse_batching_parameters, read_batching_parameters

    if args.batching_parameters_file:
        batching = read_batching_parameters(Path(args.batching_parameters_file))
    else:
        batching = parse_batching_parameters("", "--enable_batching")
    return replace(batching, per_model=args.enable_per_model_batching_parameters)


def _metrics_path(args: argparse.Namespace) -> str:
    """--monitoring_config_file: the path its ``prometheus_config`` names on the REST port ("" : none)."""
    if not args.monitoring_config_file:
        return ""
    if not args.rest_api_port:
        raise ConfigError("--monitoring_config_file: its Prometheus path is served on the REST port; "
                          "give --rest_api_port too")
    from deployments.repository.tfserving_monitoring import read_monitoring_config

    return read_monitoring_config(Path(args.monitoring_config_file))
