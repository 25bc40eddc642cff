"""A model's autoscaling, read from its config.pbtxt ``parameters``, and the Serve option it becomes.

Triton has no autoscaling and Ray Serve's own scales on ongoing requests only, which a batching
server hides (one call carries a whole batch). So the settings live where a Triton user puts
anything Triton lacks, in ``parameters``::

    parameters { key: "autoscaling.min_replicas" value { string_value: "1" } }
    parameters { key: "autoscaling.max_replicas" value { string_value: "4" } }

Either key turns autoscaling on; ``instance_group.count`` is then the replica count a version starts
with (clamped into [min, max]). ``min_replicas: 0`` scales an idle version to zero: a request that
finds no replica waits in its handle while Serve starts one (the cold-start path), it never fails.
The decision itself is ``deployments.control.autoscale_policy.QueueDepthPolicy``, on rows waiting
and busy time (``deployments.dataplane.replica_load``). Pure: no Ray, no Serve.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.errors import ConfigError

__all__ = ["AutoscalingSpec", "autoscaling_from_parameters", "serve_autoscaling_config", "PREFIX", "POLICY_PATH"]

PREFIX = "autoscaling."
POLICY_PATH = "deployments.control.autoscale_policy:QueueDepthPolicy"
# Defaults chosen for a batching server on a small cluster: decide within seconds of a load step,
# give replicas back only after a quiet minute (a replica start costs a model load).
_DEFAULTS = {"target_busy": 0.8, "upscale_delay_s": 3.0, "downscale_delay_s": 60.0, "look_back_period_s": 6.0,
             "metrics_interval_s": 1.0}
_INTS = ("min_replicas", "max_replicas")
_FLOATS = ("target_rows", "target_busy", "upscale_delay_s", "downscale_delay_s", "downscale_to_zero_delay_s",
           "look_back_period_s", "metrics_interval_s")


@dataclass(frozen=True)
class AutoscalingSpec:
    """One model's autoscaling: bounds, the targets per replica, and how fast it reacts.

    ``target_rows``: rows waiting or running per replica the autoscaler aims at (default: one full
    batch, ``max_batch_size``, or 1 without batching); ``target_busy``: the share of time a replica
    computes (0..1) above which it wants help.
    """

    min_replicas: int
    max_replicas: int
    initial_replicas: int
    target_rows: float
    target_busy: float = 0.8
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 60.0
    downscale_to_zero_delay_s: float | None = None
    look_back_period_s: float = 6.0
    metrics_interval_s: float = 1.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _number(parameters: dict[str, str], key: str, kind: type, source: str) -> float | int | None:
    text = parameters.get(PREFIX + key)
    if text is None:
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        raise ConfigError(f'{source}: parameters["{PREFIX}{key}"]: {text!r} is not '
                          f'{"a whole number" if kind is int else "a number"}') from None
    if value < 0 or (kind is float and value != value):
        raise ConfigError(f'{source}: parameters["{PREFIX}{key}"]: must be >= 0, got {text!r}')
    return value


def autoscaling_from_parameters(parameters: dict[str, str], instances: int, max_batch_size: int,
                                source: str) -> AutoscalingSpec | None:
    """The model's autoscaling, or None when neither bound is set (a fixed ``instance_group`` count).

    Raises:
        ConfigError: an unknown ``autoscaling.*`` key, a value that is not a number, or bounds that
            contradict each other; the message names the file and the parameter.
    """
    unknown = sorted(k for k in parameters if k.startswith(PREFIX) and k[len(PREFIX):] not in _INTS + _FLOATS)
    if unknown:
        raise ConfigError(f'{source}: parameters["{unknown[0]}"]: unknown autoscaling setting; known: '
                          f'{", ".join(PREFIX + k for k in _INTS + _FLOATS)}')
    values = {k: _number(parameters, k, int, source) for k in _INTS}
    values.update({k: _number(parameters, k, float, source) for k in _FLOATS})
    if values["min_replicas"] is None and values["max_replicas"] is None:
        return None
    low = values["min_replicas"] if values["min_replicas"] is not None else min(1, values["max_replicas"])
    high = values["max_replicas"] if values["max_replicas"] is not None else max(low, instances, 1)
    if high < 1:
        raise ConfigError(f'{source}: parameters["{PREFIX}max_replicas"]: must be at least 1')
    if low > high:
        raise ConfigError(f'{source}: parameters["{PREFIX}min_replicas"]: {low} is above '
                          f'{PREFIX}max_replicas {high}')
    busy = values["target_busy"]
    if busy is not None and not 0 < busy <= 1:
        raise ConfigError(f'{source}: parameters["{PREFIX}target_busy"]: a share of time in (0, 1], got {busy}')
    for key in ("target_rows", "look_back_period_s", "metrics_interval_s"):
        if values[key] == 0:
            raise ConfigError(f'{source}: parameters["{PREFIX}{key}"]: must be above 0')
    chosen = {k: v for k, v in values.items() if v is not None and k not in _INTS}
    settings = {**_DEFAULTS, **chosen}
    if settings["look_back_period_s"] <= settings["metrics_interval_s"]:  # Serve's rule: a window of reports
        raise ConfigError(f'{source}: parameters["{PREFIX}look_back_period_s"]: must be above '
                          f'{PREFIX}metrics_interval_s ({settings["metrics_interval_s"]:g})')
    settings.setdefault("target_rows", float(max(1, max_batch_size)))
    return AutoscalingSpec(min_replicas=low, max_replicas=high, initial_replicas=min(max(instances, low), high),
                           **settings)


def serve_autoscaling_config(spec: AutoscalingSpec) -> dict:
    """Serve's ``autoscaling_config`` for ``spec``: its bounds and delays, our policy with its targets.

    Serve wraps a custom policy with its own bounds, delays and cold start (a request waiting at a
    version with no replica starts one at once), so the policy only turns load into a count.
    """
    config = {"min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
              "initial_replicas": spec.initial_replicas, "upscale_delay_s": spec.upscale_delay_s,
              "downscale_delay_s": spec.downscale_delay_s, "look_back_period_s": spec.look_back_period_s,
              "metrics_interval_s": spec.metrics_interval_s,
              "policy": {"policy_function": POLICY_PATH,
                         "policy_kwargs": {"target_rows": spec.target_rows, "target_busy": spec.target_busy}}}
    if spec.downscale_to_zero_delay_s is not None:
        config["downscale_to_zero_delay_s"] = spec.downscale_to_zero_delay_s
    return config
