"""TorchServe's registry and start-up without Ray: versions of a name, the default, workers, the archives a
registration may name, ``config.properties`` read as flags, and the management API's query parsing."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from ts_archives import archive

from backends.errors import ConfigError, Conflict, InvalidRequest, ModelNotFound
from backends.torchserve.wire import is_explanation
from deployments.dataplane.plane import DataPlane
from deployments.ingress.torchserve_management import query_bool, query_int, register_params
from deployments.launch.torchserve_properties import apply_ts_config, parse_properties, read_ts_config
from deployments.launch.torchserve_start import startup_params, torchserve_models
from deployments.protocol.torchserve_openapi import torchserve_api_description
from deployments.repository.config import load_config_file
from deployments.repository.mar import unpack_mar
from deployments.repository.roots import RepositoryRoots
from deployments.repository.ts_registry import DEFAULT_LABEL, RegisterParams, TorchServeRegistry


def _registry(store: Path, tmp_path: Path, **kwargs) -> TorchServeRegistry:
    return TorchServeRegistry(store, tmp_path / "cache", **kwargs)


def test_versions_of_a_name_keep_the_first_as_default_until_set(ts_versioned_store: Path, tmp_path: Path) -> None:
    registry = _registry(ts_versioned_store, tmp_path)
    model, first = registry.register(registry.archive("swap-1.mar"), "swap-1.mar")
    model, second = registry.register(registry.archive("swap-2.mar"), "swap-2.mar", params=RegisterParams(
        initial_workers=2))
    assert (first.version, first.model_version, second.version, second.model_version) == (1, "1.0", 2, "2.0")
    assert model.default == 1 and model.find(None) is first and model.find("2.0") is second
    override = model.override
    assert override.version_policy.versions == (1, 2)
    assert dict(override.version_labels) == {"1.0": 1, "2.0": 2, DEFAULT_LABEL: 1}
    assert override.replicas == 1  # workers belong to the name: the first registration set them
    with pytest.raises(Conflict, match="1.0 is already registered"):
        registry.register(registry.archive("swap-1.mar"), "swap-1.mar")
    assert registry.set_default("swap", "2.0").override.version_labels[0] == (DEFAULT_LABEL, 2)
    with pytest.raises(InvalidRequest, match="default version 2.0"):
        registry.unregister("swap", "2.0")
    assert [v.model_version for v in registry.unregister("swap", "1.0").versions] == ["2.0"]
    with pytest.raises(ModelNotFound, match="9.9"):
        registry.unregister("swap", "9.9")
    assert registry.unregister("swap") is None and not registry.models  # the last (default) version
    with pytest.raises(ModelNotFound):
        registry.get("swap")


def test_a_version_string_whose_number_is_taken_gets_the_next(ts_versioned_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(ts_versioned_store, store)
    archive(store, "swap", "version_handle.py", "1.5", file_name="swap-15.mar")
    registry = _registry(store, tmp_path)
    registry.register(registry.archive("swap-1.mar"), "swap-1.mar")
    model, added = registry.register(registry.archive("swap-15.mar"), "swap-15.mar")
    assert added.version == 2 and model.find("1.5") is added and dict(model.override.version_labels)["1.5"] == 2
    assert (model.folder / "2" / "MAR-INF" / "MANIFEST.json").is_file()


def test_workers_scale_within_bounds(ts_versioned_store: Path, tmp_path: Path) -> None:
    registry = _registry(ts_versioned_store, tmp_path, default_workers=2)
    model, _ = registry.register(registry.archive("swap-1.mar"), "swap-1.mar")
    assert (model.workers, model.max_workers) == (2, 2)  # default_workers_per_model
    assert registry.scale("swap", 3, None).override.replicas == 3
    assert registry.scale("swap", None, 5).max_workers == 5
    with pytest.raises(InvalidRequest, match="at least one worker"):
        registry.scale("swap", 0, None)
    with pytest.raises(InvalidRequest, match="max_worker 1 is below min_worker 3"):
        registry.scale("swap", None, 1)


def test_only_archives_of_the_store_register(ts_versioned_store: Path, tmp_path: Path) -> None:
    registry = _registry(ts_versioned_store, tmp_path)
    inside = ts_versioned_store.resolve() / "swap-1.mar"
    assert registry.archive(f"file://{inside}") == inside == registry.archive(str(inside))
    for url, error, text in (("", InvalidRequest, "url is required"),
                             ("https://example.com/x.mar", InvalidRequest, "model store only"),
                             ("../elsewhere.mar", InvalidRequest, "outside the model store"),
                             ("missing.mar", ModelNotFound, "missing.mar")):
        with pytest.raises(error, match=text):
            registry.archive(url)
    with pytest.raises(InvalidRequest, match="no --model-store"):
        TorchServeRegistry(None, tmp_path).archive("swap-1.mar")


def test_registration_settings_and_the_config_written(ts_versioned_store: Path, tmp_path: Path) -> None:
    registry = _registry(ts_versioned_store, tmp_path, job_queue_size=7)
    model, added = registry.register(registry.archive("swap-1.mar"), "swap-1.mar", "renamed", RegisterParams(
        batch_size=8, max_batch_delay_ms=0, response_timeout_s=3))
    assert model.name == "renamed" and (added.settings.batch_size, added.settings.max_batch_delay_ms) == (8, 0)
    config = load_config_file(model.folder)
    assert config.platform == "torchserve" and config.max_batch_size == 8
    assert config.dynamic_batching.default_timeout_microseconds == 3_000_000
    assert config.dynamic_batching.max_queue_size == 7
    roots = RepositoryRoots([], {"renamed": model.folder}, {"renamed": model.override})
    entry = roots.scan("renamed")
    assert entry.served_versions == [1] and entry.config.replica_count == 1
    roots.place("renamed", model.folder, registry.scale("renamed", 2, None).override)
    assert roots.scan("renamed").config.replica_count == 2
    roots.rename({}, {})  # TF Serving's config re-read: registered models stay
    assert roots.model_names() == ["renamed"]
    roots.place("renamed", None)
    assert roots.model_names() == []


def test_unversioned_requests_follow_the_default_label() -> None:
    plane = DataPlane("m", servable=None, version_labels={DEFAULT_LABEL: 2, "1.0": 1})
    assert plane.version(None) == "2" and plane.version("") == "2" and plane.version("1.0") == "1"
    assert DataPlane("m", servable=None).version(None) is None


def test_config_properties_read_as_torchserve_reads_them(tmp_path: Path) -> None:
    text = ("# TorchServe's example\ninference_address=http://0.0.0.0:8080\nmanagement_address: http://0.0.0.0:8081\n"
            "metrics_address=http://0.0.0.0:8082\nmodel_store=store\nload_models=a.mar, b=b.mar\n"
            'models={"a": {"1.0": {"defaultVersion": true, \\\n  "batchSize": 4}}}\n'
            "default_workers_per_model=2\njob_queue_size=50\nenable_token_auth=true\nnumber_of_netty_threads=4\n"
            "! another comment\n")
    assert parse_properties("a = 1\nb: two\\\n  lines\n")["b"] == "twolines"
    props = read_ts_config(text, "config.properties")
    assert (props.host, props.inference_port, props.management_port, props.metrics_port) == ("0.0.0.0", 8080,
                                                                                              8081, 8082)
    assert props.load_models == ("a.mar", "b=b.mar") and props.models["a"]["1.0"]["batchSize"] == 4
    assert (props.default_workers, props.job_queue_size, props.token_auth) == (2, 50, True)
    assert props.ignored == ("number_of_netty_threads",)
    for bad, where in (("inference_address=https://h:1", "only http"), ("job_queue_size=x", "job_queue_size"),
                       ("models=[1]", "models"), ("metrics_address=http://h", "HOST:PORT")):
        with pytest.raises(ConfigError, match=where):
            read_ts_config(bad, "c")
    assert read_ts_config("enable_token_auth=true\ndisable_token_authorization=true", "c").token_auth is False


def test_apply_ts_config_fills_what_the_command_line_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:8080\nmanagement_address=http://127.0.0.1:8081\n"
                      "model_store=store\nenable_token_auth=true\nenable_model_api=true\n")
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(ts_config=str(config), ts_inference_port=9000, ts_management_port=0, ts_metrics_port=0,
                              model_store=None, models=[], enable_model_api=False)
    apply_ts_config(args)
    assert (args.ts_inference_port, args.ts_management_port, args.ts_host) == (9000, 8081, "127.0.0.1")
    assert args.model_store == str(tmp_path / "store") and args.enable_model_api
    keys = json.loads((tmp_path / "key_file.json").read_text())  # TorchServe's key file, in the working folder
    assert args.ts_token_keys[keys["management"]["key"]] == "management"
    assert args.ts_token_keys[keys["inference"]["key"]] == "inference"
    assert (tmp_path / "key_file.json").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="missing.properties"):
        apply_ts_config(argparse.Namespace(ts_config=str(tmp_path / "missing.properties")))


def test_startup_archives_with_models_json(ts_versioned_store: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERGRID_MAR_CACHE", str(tmp_path / "cache"))
    models_json = {"swap": {"2.0": {"defaultVersion": True, "minWorkers": 2, "batchSize": 2}}}
    params, default = startup_params(models_json, "swap", "2.0")
    assert default and (params.initial_workers, params.batch_size) == (2, 2)
    with pytest.raises(ConfigError, match="batchSize"):
        startup_params({"swap": {"1.0": {"batchSize": "4"}}}, "swap", "1.0")
    args = argparse.Namespace(model_store=str(ts_versioned_store), models=["swap-1.mar,swap-2.mar"],
                              ts_models_json=models_json, ts_default_workers=1, ts_job_queue_size=0)
    folders, overrides, registry, problem = torchserve_models(args)
    assert problem is None and list(folders) == ["swap"]
    assert dict(overrides["swap"].version_labels)[DEFAULT_LABEL] == 2
    assert [v.at_startup for v in registry.get("swap").versions] == [True, True]
    args.models = ["swap-1.mar,swap-1.mar"]
    assert "already registered" in torchserve_models(args)[3]


def test_management_query_parameters_are_checked_by_name() -> None:
    assert query_int({"limit": ["5"]}, "limit", 1) == 5 and query_int({}, "limit") is None
    with pytest.raises(InvalidRequest, match="Invalid min_worker"):
        query_int({"min_worker": ["two"]}, "min_worker")
    assert query_bool({"synchronous": ["TRUE"]}, "synchronous") and not query_bool({}, "synchronous")
    params = register_params({"batch_size": ["4"], "max_batch_delay": ["50"], "initial_workers": ["0"]})
    assert (params.batch_size, params.max_batch_delay_ms, params.initial_workers) == (4, 50, None)
    with pytest.raises(InvalidRequest, match="handler"):
        register_params({"handler": ["image_classifier"]})
    with pytest.raises(InvalidRequest, match="batch_size"):
        register_params({"batch_size": ["0"]})


def test_explanations_are_marked_and_the_api_is_described() -> None:
    assert is_explanation(((), (("explain", "True"),))) and not is_explanation(b"raw")
    assert not is_explanation(((), (("x-tag", "1"),)))
    paths = torchserve_api_description("1.0")["paths"]
    assert {"/models", "/models/{model_name}/{model_version}/set-default", "/explanations/{model_name}"} <= set(paths)


def test_a_batch_mixing_explanations_and_predictions_runs_each_apart(ts_model_store: Path, tmp_path: Path) -> None:
    import numpy as np

    from backends.registry import create_backend
    from backends.torchserve.wire import TsParameter

    model = unpack_mar(ts_model_store / "mlp.mar", tmp_path)
    backend = create_backend(load_config_file(model.folder), model.folder / "1")
    backend.load()
    body = json.dumps({"features": [0.5] * 16}).encode()
    batch = []
    for headers in ((), (("explain", "True"),), ()):
        element = np.empty((1, 1), dtype=object)
        element[0, 0] = ((TsParameter("body", "application/json", body),), headers)
        batch.append({"body": element})
    answers = [json.loads(a["output"].ravel()[0]) for a in backend.execute_requests(batch)]
    assert [sorted(a) for a in answers] == [["batch", "score"], ["batch", "saliency"], ["batch", "score"]]
    assert [a["batch"] for a in answers] == [2, 1, 2] and len(answers[1]["saliency"]) == 16
