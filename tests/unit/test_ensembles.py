"""Ensemble configs and graphs, pipeline lookup and the load-time checks: pure, no Ray."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest
from build_repository import CREDIT_CONFIG, FRAUD_CONFIG, LOAN_DECISION_CONFIG, RISK_ENSEMBLE_CONFIG

from backends.errors import ConfigError, StepFailed
from backends.model_config import EnsembleStep
from deployments.repository.config import parse_config, parse_config_json
from pipelines.ensemble import Ensemble
from pipelines.graph import build_graph
from pipelines.spec import check_composite, composite_tag, member_names, pipeline_class

MEMBERS = {"fraud": parse_config(FRAUD_CONFIG, "fraud/config.pbtxt", "fraud"),
           "credit_score": parse_config(CREDIT_CONFIG, "credit_score/config.pbtxt", "credit_score")}

# Two steps, a -> b, on members that take and give "x" / "y".
CHAIN = """
name: "chain"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "a" model_version: -1 input_map { key: "x" value: "IN" } output_map { key: "y" value: "mid" } },
    { model_name: "b" model_version: 2 input_map { key: "x" value: "mid" } output_map { key: "y" value: "OUT" } }
  ]
}
"""
MEMBER = ('backend: "onnxruntime" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
          'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]')
CHAIN_MEMBERS = {name: parse_config(MEMBER, f"{name}/config.pbtxt", name) for name in ("a", "b")}


def ensemble(text: str = CHAIN):
    return parse_config(text, "chain/config.pbtxt", "chain")


def test_ensemble_scheduling_parses_steps_and_maps() -> None:
    config = ensemble()
    assert config.composite and config.platform == "ensemble"
    assert config.ensemble_steps == (
        EnsembleStep("a", -1, (("x", "IN"),), (("y", "mid"),)),
        EnsembleStep("b", 2, (("x", "mid"),), (("y", "OUT"),)),
    )
    graph = build_graph(config, CHAIN_MEMBERS)
    assert graph.order() == [0, 1] and graph.producer == {"mid": 0, "OUT": 1}


def test_example_risk_ensemble_is_two_independent_steps() -> None:
    config = parse_config(RISK_ENSEMBLE_CONFIG, "risk_ensemble/config.pbtxt", "risk_ensemble")
    graph = build_graph(config, MEMBERS)
    assert graph.members == ("fraud", "credit_score")
    # Neither step reads what the other writes: nothing orders them, so they run at once.
    assert all(t in graph.inputs for step in graph.steps for _, t in step.input_map)


def test_json_config_maps_are_objects() -> None:
    text = ('{"platform": "ensemble", "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [4]}],'
            ' "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]}],'
            ' "ensemble_scheduling": {"step": [{"model_name": "a", "input_map": {"x": "IN"},'
            ' "output_map": {"y": "OUT"}}]}}')
    config = parse_config_json(text, "load request", "chain")
    assert config.ensemble_steps == (EnsembleStep("a", -1, (("x", "IN"),), (("y", "OUT"),)),)


@pytest.mark.parametrize("text, field", [
    ('platform: "onnxruntime" ensemble_scheduling { step [ { model_name: "a" } ] }', "ensemble_scheduling"),
    ('platform: "ensemble"', "ensemble_scheduling"),
    ('platform: "ensemble" ensemble_scheduling { step [ { model_version: 1 } ] }', "model_name"),
    ('platform: "ensemble" ensemble_scheduling { step [ { model_name: "a" model_version: -2 } ] }', "model_version"),
    ('platform: "ensemble" ensemble_scheduling { step [ { model_name: "a" input_map { key: "" value: "A" } } ] }',
     "input_map"),
])
def test_bad_ensemble_fields_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_config(text, "chain/config.pbtxt", "chain")


def _rejects(text: str, members: dict, *words: str) -> str:
    with pytest.raises(ConfigError) as info:
        check_composite(ensemble(text), members)
    message = str(info.value)
    assert "chain/config.pbtxt" in message
    for word in words:
        assert word in message, message
    return message


def test_missing_member_is_rejected() -> None:
    _rejects(CHAIN, {"a": CHAIN_MEMBERS["a"], "b": None}, "step[1].model_name", "'b'", "missing member")


def test_cycle_is_rejected_naming_the_steps() -> None:
    # Steps 0 and 1 feed each other; step 2 alone connects the ensemble's input and output.
    looped = replace(ensemble(), ensemble_steps=(
        EnsembleStep("a", -1, (("x", "back"),), (("y", "mid"),)),
        EnsembleStep("b", -1, (("x", "mid"),), (("y", "back"),)),
        EnsembleStep("a", -1, (("x", "IN"),), (("y", "OUT"),))))
    with pytest.raises(ConfigError, match=r"cycle: step 0 \(a\) -> step 1 \(b\) -> step 0 \(a\)"):
        check_composite(looped, CHAIN_MEMBERS)


def test_self_member_is_a_cycle() -> None:
    _rejects(CHAIN.replace('model_name: "a"', 'model_name: "chain"'), CHAIN_MEMBERS, "own member", "cycle")


@pytest.mark.parametrize("old, new, words", [
    # A step reads a tensor nothing writes.
    ('input_map { key: "x" value: "mid" }', 'input_map { key: "x" value: "nowhere" }', ("unmapped", "'nowhere'")),
    # An ensemble output that no step writes.
    ('output_map { key: "y" value: "OUT" }', 'output_map { key: "y" value: "other" }', ("unmapped", "'OUT'")),
    # A member input fed by nothing.
    ('{ model_name: "b" model_version: 2 input_map { key: "x" value: "mid" }', '{ model_name: "b" model_version: 2',
     ("unmapped", "'x'", "step[1].input_map")),
    # A member tensor that does not exist.
    ('output_map { key: "y" value: "mid" }', 'output_map { key: "z" value: "mid" }', ("no output 'z'",)),
    # Two steps writing one tensor.
    ('output_map { key: "y" value: "OUT" }', 'output_map { key: "y" value: "mid" }', ("already written",)),
    # An ensemble input that nothing reads.
    ('input [ { name: "IN"', 'input [ { name: "SPARE" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "IN"',
     ("unmapped", "'SPARE'")),
    # Datatypes that disagree across a mapping.
    ('input [ { name: "IN" data_type: TYPE_FP32', 'input [ { name: "IN" data_type: TYPE_INT32', ("INT32", "FP32")),
])
def test_unmapped_and_miswired_tensors_are_rejected(old: str, new: str, words: tuple[str, ...]) -> None:
    assert old in CHAIN
    _rejects(CHAIN.replace(old, new), CHAIN_MEMBERS, *words)


def test_a_composite_member_is_rejected() -> None:
    members = {"a": CHAIN_MEMBERS["a"], "b": ensemble()}
    _rejects(CHAIN, members, "itself an ensemble or pipeline")


def test_python_pipeline_lookup_and_members() -> None:
    config = parse_config(LOAN_DECISION_CONFIG, "loan_decision/config.pbtxt", "loan_decision")
    assert config.composite
    assert member_names(config) == ("fraud", "credit_score")
    check_composite(config, MEMBERS)
    with pytest.raises(ConfigError, match="missing member"):
        check_composite(config, {"fraud": MEMBERS["fraud"], "credit_score": None})


@pytest.mark.parametrize("path, words", [
    (None, "names its class"),
    ("os:system", "outside the pipelines package"),
    ("pipelines.nope:Thing", "cannot import"),
    ("pipelines.loan_decision:FIELDS", "not a pipelines.base.Pipeline subclass"),
])
def test_pipeline_class_refuses_what_it_cannot_serve(path: str | None, words: str) -> None:
    config = parse_config(LOAN_DECISION_CONFIG, "loan_decision/config.pbtxt", "loan_decision")
    parameters = {} if path is None else {"pipeline": path}
    with pytest.raises(ConfigError, match=words) as info:
        pipeline_class(replace(config, parameters=parameters))
    assert "loan_decision/config.pbtxt: parameters.pipeline" in str(info.value)


def test_composite_tag_follows_config_and_version() -> None:
    config = ensemble()
    assert composite_tag(config, 1) == composite_tag(replace(config, warnings=("w",)), 1)
    assert composite_tag(config, 1) != composite_tag(config, 2)
    assert composite_tag(config, 1) != composite_tag(replace(config, max_batch_size=4), 1)


class _SlowMembers:
    """Stands in for the member routers: each member answers after its own delay."""

    def __init__(self, delays_s: dict[str, float], fail: str | None = None) -> None:
        self.delays_s, self.fail, self.calls = delays_s, fail, []

    async def call(self, member, inputs, version=None, step=None):
        self.calls.append((member, version, step))
        await asyncio.sleep(self.delays_s[member])
        if member == self.fail:
            raise StepFailed(f"'chain' {step} failed: boom", 500)
        return {"y": inputs["x"] + 1}


def test_ensemble_runs_independent_steps_at_once_and_chains_the_rest() -> None:
    parallel = ensemble(CHAIN.replace('{ key: "x" value: "mid" } output_map { key: "y" value: "OUT" }',
                                      '{ key: "x" value: "IN" } output_map { key: "y" value: "OUT" }')
                        .replace('output [ { name: "OUT"', 'output [ { name: "mid" data_type: TYPE_FP32 dims: [ 4 ] }, '
                                                          '{ name: "OUT"'))
    calls = _SlowMembers({"a": 0.2, "b": 0.2})
    start = time.perf_counter()
    out = asyncio.run(Ensemble(parallel, calls).infer({"IN": np.zeros((1, 4), np.float32)}))
    assert time.perf_counter() - start < 0.35  # not 0.4: both ran at once
    assert out["mid"].tolist() == [[1, 1, 1, 1]] and out["OUT"].tolist() == [[1, 1, 1, 1]]

    calls = _SlowMembers({"a": 0.05, "b": 0.05})
    out = asyncio.run(Ensemble(ensemble(), calls).infer({"IN": np.zeros((1, 4), np.float32)}))
    assert out == {"OUT": out["OUT"]} and out["OUT"].tolist() == [[2, 2, 2, 2]]
    assert calls.calls == [("a", None, "step 0 (a)"), ("b", 2, "step 1 (b version 2)")]


def test_a_failing_step_fails_the_request_with_its_name() -> None:
    calls = _SlowMembers({"a": 0.01, "b": 0.01}, fail="a")
    with pytest.raises(StepFailed, match=r"step 0 \(a\) failed: boom"):
        asyncio.run(Ensemble(ensemble(), calls).infer({"IN": np.zeros((1, 4), np.float32)}))
    assert [c[0] for c in calls.calls] == ["a"]  # b never ran: its input never came


# --- the flagship pipeline's own pieces ---------------------------------------------------

def test_loan_records_become_columns_and_errors_name_the_field() -> None:
    from backends.errors import InvalidRequest
    from pipelines.loan_decision import FIELDS, records_to_tensors

    record = {"amount": 120.0, "merchant_category": "grocery", "account_age_days": 900, "annual_income": 52000}
    columns, many = records_to_tensors(record)
    assert not many and set(columns) == set(FIELDS)
    assert columns["merchant_category"].tolist() == [[b"grocery"]] and columns["hour"].tolist() == [[12.0]]
    columns, many = records_to_tensors({"applications": [record, {**record, "amount": 5}]})
    assert many and columns["amount"].tolist() == [[120.0], [5.0]]
    for payload, words in [
        ({**record, "amount": None}, "amount is required"),
        ({k: v for k, v in record.items() if k != "annual_income"}, "annual_income is required"),
        ({**record, "hour": "noon"}, "hour must be a finite number"),
        ({**record, "merchant_category": 3}, "merchant_category must be a string"),
        ({**record, "colour": "red"}, "unknown field 'colour'"),
        ({"applications": [record, {**record, "amount": True}]}, r"applications\[1\].amount"),
        ([record], "send one application"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            records_to_tensors(payload)


def test_decision_is_the_worse_verdict_with_its_reasons() -> None:
    from pipelines.loan_decision import decide

    assert decide(0.05, 760).decision == "approve"
    review = decide(0.5, 760)
    assert review.decision == "review" and review.reasons == ("fraud probability 0.50 >= 0.40",)
    assert decide(0.05, 600).decision == "review"
    decline = decide(0.9, 500)
    assert decline.decision == "decline" and len(decline.reasons) == 2
    assert decide(0.9, 800).to_json()["reasons"] == ["fraud probability 0.90 >= 0.80"]


def test_feature_builders_give_each_model_its_shape() -> None:
    from pipelines.loan_decision import credit_features, fraud_features, records_to_tensors

    columns, _ = records_to_tensors({"applications": [
        {"amount": 40, "merchant_category": "grocery", "account_age_days": 3000, "annual_income": 90000},
        {"amount": 4000, "merchant_category": "crypto", "hour": 3, "account_age_days": 2, "annual_income": 20000}]})
    fraud, credit = fraud_features(columns), credit_features(columns)
    assert fraud.shape == (2, 16) and credit.shape == (2, 8)
    assert fraud.dtype == np.float32 and credit.dtype == np.float32
    assert fraud[1, 1] > fraud[0, 1] and fraud[1, 7] == 1.0 and fraud[0, 7] == 0.0  # riskier merchant, at night
