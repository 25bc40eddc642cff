"""The controller's reconcile plan, without Ray: every case the hot-swap tests cover on a cluster.

A tiny simulator applies each planned change with the same ``ModelState`` transitions the
controller uses after its Serve calls, with every load succeeding unless a test says it fails;
``converge`` runs plan -> apply until the plan is empty and returns the rounds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from deployments.control import plan as p
from deployments.control.state import (
    LOADING,
    READY,
    UNAVAILABLE,
    CompositeSpec,
    ModelPolicy,
    ModelSnapshot,
    ModelState,
    VersionApp,
    adopt,
)
from deployments.control.views import index_rows, model_statuses
from deployments.dataplane.table import Route, route_for
from deployments.names import endpoint_app, version_app
from deployments.repository.config import parse_config
from deployments.repository.scan import ModelEntry

BATCHED = 'backend: "onnxruntime" max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 100 }'
PLAIN = 'backend: "onnxruntime" max_batch_size: 8'


def snapshot(versions: dict[int, str], text: str = BATCHED, replicas: int = 1, endpoint_replicas: int = 1,
             error: str = "") -> ModelSnapshot:
    config = parse_config(text, "m/config.pbtxt", "m")
    entry = ModelEntry("m", Path("/r/m"), config, {v: Path(f"/r/m/{v}") for v in versions})
    return ModelSnapshot("m", True, entry, error=error, versions=versions, replicas=replicas,
                         autoscaling=config.autoscaling, endpoint_replicas=endpoint_replicas)


def simulate(state: ModelState, change: p.Change, snap: ModelSnapshot, failing: set[str]) -> ModelState | None:
    """What the controller's apply step records for ``change`` (None: the model was forgotten)."""
    match change:
        case p.SetReason(reason):
            return state.with_reason(reason)
        case p.RemoveModel():
            return state.removed()
        case p.ForgetModel():
            return None
        case p.ForgetFailure(version):
            return state.without_failure(version)
        case p.DeployVersions(versions):
            apps = [VersionApp(v, version_app("m", v, tag), tag, LOADING, snap.replicas, snap.autoscaling)
                    for v, tag in versions]
            state = state.deploying(apps)
            for app in apps:
                state = state.loaded(app.app, "boom" if app.tag in failing else "")
            return state
        case p.Resize(_, app, _, replicas, autoscaling):
            return state.resized(app, replicas, autoscaling)
        case p.DeployEndpoint(routes, replicas):
            return state.published(routes, replicas)
        case p.PublishRoutes(routes):
            return state.published(routes)
        case p.DeleteVersions(apps):
            return state.without_apps(apps)
        case p.DeployComposite(version, tag, replicas):
            return state.composite_deployed(version, tag, replicas)
        case p.LoadMembers():
            return state
    raise AssertionError(change)


def converge(state: ModelState, snap: ModelSnapshot, policy: ModelPolicy | None = None,
             failing: set[str] | None = None) -> tuple[ModelState | None, list[list[p.Change]]]:
    policy = policy or ModelPolicy()
    rounds = []
    for _ in range(10):
        changes = p.plan(state, snap, policy)
        if not changes:
            return state, rounds
        rounds.append(changes)
        for change in changes:
            state = simulate(state, change, snap, failing or set())
            if state is None:
                return None, rounds
    raise AssertionError(f"did not converge: {rounds}")


def kinds(rounds: list[list[p.Change]]) -> list[list[str]]:
    return [[type(c).__name__ for c in changes] for changes in rounds]


def serving(*versions: tuple[int, str], text: str = BATCHED) -> ModelState:
    """A model already serving these (version, tag) pairs through its endpoint."""
    state, _ = converge(ModelState("m"), snapshot(dict(versions), text))
    assert state is not None and state.served == sorted((v for v, _ in versions), reverse=True)
    return state


def test_a_new_model_loads_then_gets_its_endpoint() -> None:
    state, rounds = converge(ModelState("m"), snapshot({1: "t1"}))
    assert kinds(rounds) == [["DeployVersions"], ["DeployEndpoint"]]
    assert rounds[0][0] == p.DeployVersions(((1, "t1"),))
    assert state.routes == (Route(1, "m:v1@t1", batch_rows=8, queue_delay_us=100),) and state.endpoint


def test_a_new_version_is_loaded_beside_published_then_the_old_one_deleted() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({2: "t2"}))
    assert kinds(rounds) == [["DeployVersions"], ["PublishRoutes"], ["DeleteVersions"]]
    assert [r.app for r in rounds[1][0].routes] == ["m:v2@t2"]
    assert rounds[2][0] == p.DeleteVersions(("m:v1@t1",))
    assert state.served == [2] and set(state.apps) == {"m:v2@t2"}


def test_removing_the_newest_version_rolls_back_by_the_same_steps() -> None:
    state, _ = converge(serving((1, "t1")), snapshot({2: "t2"}))
    state, rounds = converge(state, snapshot({1: "t1"}))
    assert kinds(rounds) == [["DeployVersions"], ["PublishRoutes"], ["DeleteVersions"]]
    assert rounds[0][0] == p.DeployVersions(((1, "t1"),)) and rounds[2][0] == p.DeleteVersions(("m:v2@t2",))
    assert state.served == [1]


def test_a_batching_change_is_applied_in_place() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({1: "t1"}, text=PLAIN))
    assert kinds(rounds) == [["PublishRoutes"]]
    assert rounds[0][0].routes == (Route(1, "m:v1@t1"),) and set(state.apps) == {"m:v1@t1"}


def test_an_instance_count_change_resizes_the_running_version() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({1: "t1"}, replicas=3))
    assert rounds == [[p.Resize(1, "m:v1@t1", "t1", 3)]]
    assert state.apps["m:v1@t1"].replicas == 3


def test_more_endpoint_replicas_redeploy_the_endpoint_only() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({1: "t1"}, endpoint_replicas=2))
    assert kinds(rounds) == [["DeployEndpoint"]] and state.endpoint_replicas == 2


def test_a_change_of_what_a_version_loads_deploys_beside_it() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({1: "t1-new"}))
    assert kinds(rounds) == [["DeployVersions"], ["PublishRoutes"], ["DeleteVersions"]]
    assert rounds[0][0] == p.DeployVersions(((1, "t1-new"),)) and rounds[2][0] == p.DeleteVersions(("m:v1@t1",))
    assert state.routes[0].app == "m:v1@t1-new"


def test_a_failed_version_never_replaces_the_good_one_and_stays_out() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({2: "t2"}), failing={"t2"})
    assert kinds(rounds) == [["DeployVersions"], ["DeleteVersions"]]  # no table ever routes to it
    assert rounds[1][0] == p.DeleteVersions(("m:v2@t2",))
    assert state.served == [1] and state.failed[2].reason == "boom"
    assert p.plan(state, snapshot({2: "t2"}), ModelPolicy()) == []  # not retried with the same files
    rows = index_rows({"m": state}, {}, ["m"])
    assert [(r.version, r.state) for r in rows] == [("2", UNAVAILABLE), ("1", READY)]


def test_a_failed_version_is_retried_once_its_files_change() -> None:
    state, _ = converge(serving((1, "t1")), snapshot({2: "t2"}), failing={"t2"})
    state, rounds = converge(state, snapshot({2: "t2-fixed"}))
    assert rounds[0] == [p.ForgetFailure(2), p.DeployVersions(((2, "t2-fixed"),))]
    assert state.served == [2] and not state.failed


def test_a_first_version_that_fails_leaves_the_model_unavailable_with_its_reason() -> None:
    state, rounds = converge(ModelState("m"), snapshot({1: "t1"}), failing={"t1"})
    assert kinds(rounds) == [["DeployVersions"], ["DeleteVersions"]] and not state.endpoint
    assert model_statuses({"m": state}, {})["m"].reason == "boom"


def test_a_broken_config_keeps_the_serving_versions_serving() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({}, error="m/config.pbtxt: max_batch_size: bad"))
    assert rounds == [[p.SetReason("m/config.pbtxt: max_batch_size: bad")]]
    assert state.served == [1]
    reason = index_rows({"m": state}, {}, ["m"])[0].reason
    assert reason == "config change not applied: m/config.pbtxt: max_batch_size: bad"
    state, rounds = converge(state, snapshot({1: "t1"}))
    assert rounds == [[p.SetReason("")]] and state.reason == ""


def test_a_version_policy_that_keeps_two_versions_serves_both() -> None:
    state, rounds = converge(serving((1, "t1")), snapshot({1: "t1", 2: "t2"}))
    assert kinds(rounds) == [["DeployVersions"], ["PublishRoutes"]]
    assert state.served == [2, 1]


def test_unloading_one_version_keeps_the_others() -> None:
    state, _ = converge(serving((1, "t1")), snapshot({1: "t1", 2: "t2"}))
    policy = ModelPolicy(explicit=True, unloaded_versions=frozenset({2}))
    state, rounds = converge(state, snapshot({1: "t1", 2: "t2"}), policy)
    assert kinds(rounds) == [["PublishRoutes"], ["DeleteVersions"]] and state.served == [1]


def test_unloading_a_model_removes_it_and_explicit_mode_keeps_it_listed() -> None:
    policy = ModelPolicy(wanted=False, explicit=True)
    state, rounds = converge(serving((1, "t1")), snapshot({1: "t1"}), policy)
    assert rounds == [[p.RemoveModel()]] and state is not None and not state.apps and not state.endpoint
    assert model_statuses({"m": state}, {"m": policy})["m"].reason == "unloaded"


def test_a_model_whose_folder_is_gone_is_removed_and_forgotten() -> None:
    state, rounds = converge(serving((1, "t1")), ModelSnapshot("m", folder_exists=False))
    assert rounds == [[p.RemoveModel(), p.ForgetModel()]] and state is None


def test_after_a_restart_adopted_versions_are_not_deployed_again() -> None:
    adopted = adopt({"m:v1@t1": ("m", 1, "t1", True, 1)}, {"m"})["m"]
    assert adopted.routes == (Route(1, "m:v1@t1"),) and adopted.endpoint
    state, rounds = converge(adopted, snapshot({1: "t1"}))
    assert kinds(rounds) == [["PublishRoutes"]]  # the same versions, now with their batching
    assert state.routes[0] == route_for(1, "m:v1@t1", snapshot({1: "t1"}).config)
    assert p.plan(adopt({"m:v1@t1": ("m", 1, "t1", True, 1)}, {"m"})["m"], snapshot({1: "t1"}, text=PLAIN),
                  ModelPolicy()) == []


def test_after_a_restart_a_version_that_failed_meanwhile_is_cleaned_up() -> None:
    adopted = adopt({"m:v1@t1": ("m", 1, "t1", True, 1), "m:v2@t2": ("m", 2, "t2", False, 1)}, {"m"})["m"]
    assert adopted.routes == (Route(1, "m:v1@t1"),)
    state, rounds = converge(adopted, snapshot({2: "t2"}))
    assert kinds(rounds)[0] == ["DeployVersions"] and state.served == [2]


def test_a_loading_version_is_never_deleted() -> None:
    state = serving((1, "t1")).deploying([VersionApp(2, "m:v2@t2", "t2", LOADING)])
    assert p.plan(state, snapshot({1: "t1"}), ModelPolicy()) == []


COMPOSITE = CompositeSpec(version=1, tag="c1", members=("fraud", "credit_score"))


@pytest.mark.parametrize("explicit", [False, True])
def test_a_composite_is_deployed_once_per_config(explicit: bool) -> None:
    snap = replace(snapshot({}), composite=COMPOSITE)
    policy = ModelPolicy(explicit=explicit, members_not_loaded=("fraud",) if explicit else ())
    rounds = [p.plan(ModelState("m"), snap, policy)]
    assert kinds(rounds) == [(["LoadMembers"] if explicit else []) + ["DeployComposite"]]
    state = ModelState("m").composite_deployed(1, "c1", 1)
    assert state.routes == (Route(1, endpoint_app("m")),)
    assert p.plan(state, snap, ModelPolicy()) == []
    assert kinds([p.plan(state, replace(snap, composite=replace(COMPOSITE, tag="c2")), ModelPolicy())]) == \
        [["DeployComposite"]]


def test_a_composite_failing_its_checks_keeps_serving() -> None:
    state = ModelState("m").composite_deployed(1, "c1", 1)
    snap = replace(snapshot({}), composite=replace(COMPOSITE, error="member 'x' is not in the repository"))
    assert p.plan(state, snap, ModelPolicy()) == [p.SetReason("member 'x' is not in the repository")]
    assert p.plan(state.with_reason("member 'x' is not in the repository"), snap, ModelPolicy()) == []
