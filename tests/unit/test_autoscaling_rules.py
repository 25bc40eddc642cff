"""Autoscaling without Ray: the config's settings, the Serve option they become, the replicas'
load reports, the policy's decision, the controller's plan and the replica gauges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ray.serve.config import AutoscalingConfig

from backends.errors import ConfigError
from deployments.control import plan as p
from deployments.control.autoscale_policy import QueueDepthPolicy, wanted_replicas
from deployments.control.scaling_watch import ReplicaGauges
from deployments.control.state import READY, ModelSnapshot, ModelState, VersionApp
from deployments.dataplane.replica_load import ReplicaLoad
from deployments.dataplane.table import route_for
from deployments.names import replica_application
from deployments.observability.metrics import Recorder
from deployments.repository.autoscaling import POLICY_PATH, autoscaling_from_parameters, serve_autoscaling_config
from deployments.repository.config import parse_config
from deployments.repository.scan import ModelEntry
from deployments.repository.watch import FolderState, load_identity

SOURCE = "fraud/config.pbtxt"


def params(**values: object) -> dict[str, str]:
    return {f"autoscaling.{key}": str(value) for key, value in values.items()}


def config_text(extra: str = "", count: int = 1) -> str:
    return ('backend: "onnxruntime" max_batch_size: 16 dynamic_batching { } '
            f'instance_group {{ count: {count} kind: KIND_CPU }} ' + extra)


def parameter(key: str, value: object) -> str:
    return f'parameters {{ key: "autoscaling.{key}" value {{ string_value: "{value}" }} }} '


# --- settings --------------------------------------------------------------------------------


def test_no_bound_means_a_fixed_count() -> None:
    assert autoscaling_from_parameters({"other": "1"}, 2, 8, SOURCE) is None
    assert parse_config(config_text(count=2), SOURCE, "fraud").autoscaling is None


def test_bounds_and_defaults_from_the_config() -> None:
    config = parse_config(config_text(parameter("max_replicas", 4), count=2), SOURCE, "fraud")
    spec = config.autoscaling
    assert (spec.min_replicas, spec.max_replicas, spec.initial_replicas) == (1, 4, 2)
    assert spec.target_rows == 16.0 and spec.target_busy == 0.8  # one full batch per replica
    assert config.most_replicas == 4 and route_for(1, "fraud:v1", config).instances == 4


def test_an_ensemble_warns_and_keeps_its_fixed_count() -> None:
    text = ('platform: "ensemble" max_batch_size: 8 ' + parameter("max_replicas", 3) +
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
            'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ] '
            'ensemble_scheduling { step [ { model_name: "m" model_version: -1 '
            'input_map { key: "x" value: "x" } output_map { key: "y" value: "y" } } ] }')
    config = parse_config(text, "pair/config.pbtxt", "pair")
    assert config.autoscaling is None and any("autoscaling" in w for w in config.warnings)


def test_initial_count_is_clamped_into_the_bounds() -> None:
    assert autoscaling_from_parameters(params(min_replicas=2, max_replicas=3), 1, 0, SOURCE).initial_replicas == 2
    assert autoscaling_from_parameters(params(max_replicas=3), 5, 0, SOURCE).initial_replicas == 3
    zero = autoscaling_from_parameters(params(min_replicas=0, max_replicas=2, downscale_to_zero_delay_s=5), 1, 0,
                                       SOURCE)
    assert (zero.min_replicas, zero.initial_replicas, zero.target_rows, zero.downscale_to_zero_delay_s) == \
        (0, 1, 1.0, 5.0)


@pytest.mark.parametrize(("values", "named"), [
    ({"max_replicas": "four"}, "autoscaling.max_replicas"),
    ({"min_replicas": "-1", "max_replicas": "2"}, "autoscaling.min_replicas"),
    ({"min_replicas": "3", "max_replicas": "2"}, "autoscaling.min_replicas"),
    ({"max_replicas": "0"}, "autoscaling.max_replicas"),
    ({"max_replicas": "2", "target_busy": "1.5"}, "autoscaling.target_busy"),
    ({"max_replicas": "2", "target_rows": "0"}, "autoscaling.target_rows"),
    ({"max_replicas": "2", "upscale_delay": "1"}, "autoscaling.upscale_delay"),
    ({"max_replicas": "2", "look_back_period_s": "1"}, "autoscaling.look_back_period_s"),
])
def test_bad_settings_name_the_parameter(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=f'parameters\\["{named}"\\]') as raised:
        autoscaling_from_parameters({f"autoscaling.{k}": v for k, v in values.items()}, 1, 8, SOURCE)
    assert SOURCE in str(raised.value)


def test_serve_accepts_the_option_it_becomes() -> None:
    spec = autoscaling_from_parameters(params(min_replicas=0, max_replicas=3, target_rows=4, upscale_delay_s=1,
                                              downscale_to_zero_delay_s=2), 1, 8, SOURCE)
    option = serve_autoscaling_config(spec)
    checked = AutoscalingConfig(**option)  # Serve's own validation
    assert (checked.min_replicas, checked.max_replicas, checked.initial_replicas) == (0, 3, 1)
    assert checked.upscale_delay_s == 1 and checked.downscale_to_zero_delay_s == 2
    assert option["policy"] == {"policy_function": POLICY_PATH,
                                "policy_kwargs": {"target_rows": 4.0, "target_busy": 0.8}}


def test_changing_autoscaling_does_not_change_what_a_version_loads() -> None:
    files = FolderState("digest", 0.0, 1)
    one = parse_config(config_text(parameter("max_replicas", 2)), SOURCE, "fraud")
    other = parse_config(config_text(parameter("max_replicas", 4) + parameter("target_rows", 3)), SOURCE, "fraud")
    fixed = parse_config(config_text(), SOURCE, "fraud")
    assert load_identity(one, files) == load_identity(other, files) == load_identity(fixed, files)


def test_an_autoscaling_change_resizes_in_place() -> None:
    config = parse_config(config_text(parameter("max_replicas", 4)), SOURCE, "fraud")
    entry = ModelEntry("fraud", Path("/r/fraud"), config, {1: Path("/r/fraud/1")})
    running = ModelState("fraud").deploying([VersionApp(1, "fraud:v1@t1", "t1", READY, 1)])
    snapshot = ModelSnapshot("fraud", True, entry, versions={1: "t1"}, replicas=1, autoscaling=config.autoscaling)
    changes = p.plan(running, snapshot, p.ModelPolicy())
    assert p.Resize(1, "fraud:v1@t1", "t1", 1, config.autoscaling) in changes
    resized = running.resized("fraud:v1@t1", 1, config.autoscaling)
    assert resized.apps["fraud:v1@t1"].most_replicas == 4
    assert not [c for c in p.plan(resized, snapshot, p.ModelPolicy()) if isinstance(c, p.Resize)]


# --- what replicas report --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_replica_load_counts_rows_backlog_and_busy_time() -> None:
    clock = Clock()
    load = ReplicaLoad(clock, stale_after_s=5.0)
    load.arrived(8, ("door-a", 24))
    load.arrived(8, ("door-b", 4))
    load.computing()
    clock.now += 0.5
    load.done(8)
    clock.now += 0.5
    assert load.stats() == {"rows": 8.0, "busy": 0.5, "backlog:door-a": 24.0, "backlog:door-b": 4.0}
    load.computing()
    clock.now += 1.0  # still computing at the next report: the whole interval counts
    assert load.stats()["busy"] == 1.0
    load.done(8)
    clock.now += 6.0  # the sources went quiet
    assert load.stats() == {"rows": 0.0, "busy": 0.0}


# --- the decision ----------------------------------------------------------------------------


def test_wanted_replicas_reads_rows_once_per_source_and_busy_time() -> None:
    metrics = {"rows": {"r1": 8.0, "r2": 8.0}, "busy": {"r1": 0.9, "r2": 0.7},
               "backlog:door-a": {"r1": 30.0, "r2": 34.0},  # both replicas heard the same caller
               "backlog:door-b": {"r1": 6.0}}
    wanted, seen = wanted_replicas(metrics, target_rows=10, target_busy=0.8)
    assert wanted == pytest.approx(4.0) and seen == {"rows": 40.0, "busy": 1.6}
    # A plain handle (no caller reports): the rows the replicas hold
    assert wanted_replicas({"rows": {"r1": 8.0, "r2": 8.0}}, target_rows=4, target_busy=0.8)[0] == 4.0
    wanted, _ = wanted_replicas({"rows": {"r1": 0.0}, "busy": {"r1": 0.9}}, target_rows=10, target_busy=0.5)
    assert wanted == pytest.approx(1.8)  # computing all the time with nothing queued: still wants help


@dataclass
class Context:
    current_num_replicas: int
    target_num_replicas: int
    aggregated_metrics: dict = field(default_factory=dict)


def test_policy_rounds_up_keeps_one_while_rows_wait_and_goes_idle_to_zero() -> None:
    policy = QueueDepthPolicy(target_rows=16, target_busy=0.8)
    busy = {"rows": {"r1": 16.0}, "busy": {"r1": 1.0}, "backlog:d": {"r1": 40.0}}
    assert policy(Context(1, 1, busy))[0] == 3  # 40 rows outstanding / 16
    trickle = {"rows": {"r1": 1.0}, "busy": {"r1": 0.01}}
    assert policy(Context(2, 2, trickle))[0] == 1
    idle = {"rows": {"r1": 0.0, "r2": 0.0}, "busy": {"r1": 0.0, "r2": 0.0}}
    assert policy(Context(2, 2, idle))[0] == 0  # Serve clamps to min_replicas after its delay
    assert policy(Context(0, 1, {}))[0] == 1  # cold start: Serve's decision stands
    assert policy(Context(3, 3, {}))[0] == 3  # not heard from yet: keep what runs


# --- the replica gauges ----------------------------------------------------------------------


def test_replica_actor_names_give_their_version_application() -> None:
    assert replica_application("SERVE_REPLICA::fraud:v1@ab12#model#x1y2", "model") == "fraud:v1@ab12"
    assert replica_application("SERVE_REPLICA::loan#endpoint#x1y2", "model") is None
    assert replica_application("SERVE_CONTROLLER_ACTOR", "model") is None


def series(recorder: Recorder) -> tuple[dict, dict]:
    snapshot = recorder.snapshot()
    return ({(n, tuple(labels)): v for n, labels, v in snapshot["gauges"]},
            {(n, tuple(labels)): v for n, labels, v in snapshot["counters"]})


def test_replica_gauges_follow_samples_and_count_changes() -> None:
    recorder = Recorder()
    gauges = ReplicaGauges(recorder)
    most = {("fraud", "1"): 4}
    gauges.sample({"fraud:v1@aa": 1, "infergrid:frontdoor": 2, "loan": 1}, most)
    gauges.sample({"fraud:v1@aa": 3}, most)
    gauges.sample({"fraud:v1@aa": 1, "fraud:v1@bb": 1}, most)  # a reload beside it: the tags add up
    gauges_now, counters = series(recorder)
    assert gauges_now == {("infergrid_model_replicas", ("fraud", "1")): 2.0,
                          ("infergrid_model_replicas_max", ("fraud", "1")): 4.0}
    assert counters == {("infergrid_replica_count_changes", ("fraud", "1", "up")): 1,  # 1 -> 3
                        ("infergrid_replica_count_changes", ("fraud", "1", "down")): 1}  # 3 -> 2
    gauges.sample({}, {})
    assert series(recorder)[0] == {}
