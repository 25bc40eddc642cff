"""What the controller decides from disk alone: completeness, load identity, names, tables, JSON configs, events."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from backends.errors import ConfigError
from backends.model_config import DynamicBatching, InstanceGroup, VersionPolicy
from deployments.dataplane.table import Route, route_for, routes_token
from deployments.names import parse_version_app, version_app
from deployments.repository.config import parse_config, parse_config_json
from deployments.repository.events import FileEvents
from deployments.repository.watch import CompletionTracker, folder_state, load_identity

CONFIG = parse_config('backend: "onnxruntime" max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 100 }',
                      "m/config.pbtxt", "m")


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folder_state_follows_files_but_not_the_models_config(tmp_path: Path) -> None:
    write(tmp_path / "model.onnx", "a")
    first = folder_state(tmp_path)
    write(tmp_path / "config.pbtxt", "max_batch_size: 1")
    assert folder_state(tmp_path) == first, "a bare layout's config is not part of its version's files"
    write(tmp_path / "sub" / "variables.data", "b")
    second = folder_state(tmp_path)
    assert second.digest != first.digest and second.files == 2
    os.utime(tmp_path / "model.onnx", ns=(1, 1))
    assert folder_state(tmp_path).digest != second.digest, "a rewritten file changes the fingerprint"


def test_a_fresh_folder_is_complete_only_after_one_unchanged_interval(tmp_path: Path) -> None:
    tracker, folder = CompletionTracker(settle_s=1.0), tmp_path / "2"
    model = write(folder / "model.onnx")
    t0 = time.time()
    os.utime(model, (t0, t0))
    assert not tracker.complete(folder, folder_state(folder), t0)
    assert not tracker.complete(folder, folder_state(folder), t0 + 0.5)
    model.write_text("still writing")
    os.utime(model, (t0 + 1.0, t0 + 1.0))
    assert not tracker.complete(folder, folder_state(folder), t0 + 1.2), "changed: the interval starts again"
    assert tracker.complete(folder, folder_state(folder), t0 + 2.3)


def test_old_files_and_moved_in_folders_are_complete_at_once(tmp_path: Path) -> None:
    tracker = CompletionTracker(settle_s=1.0)
    old = write(tmp_path / "1" / "model.onnx")
    os.utime(old, (time.time() - 60, time.time() - 60))
    assert tracker.complete(tmp_path / "1", folder_state(tmp_path / "1"))
    write(tmp_path / "2" / "model.onnx")
    tracker.moved_in(tmp_path / "2")
    assert tracker.complete(tmp_path / "2", folder_state(tmp_path / "2"))
    (tmp_path / "3").mkdir()
    tracker.moved_in(tmp_path / "3")
    assert not tracker.complete(tmp_path / "3", folder_state(tmp_path / "3")), "an empty folder is never complete"


def test_load_identity_ignores_what_changes_in_place(tmp_path: Path) -> None:
    files = folder_state(write(tmp_path / "model.onnx").parent)
    base = load_identity(CONFIG, files)
    in_place = replace(CONFIG, dynamic_batching=DynamicBatching((4,), 5000), instance_group=(InstanceGroup(count=3),),
                       version_policy=VersionPolicy("all"))
    assert load_identity(in_place, files) == base
    assert load_identity(replace(CONFIG, max_batch_size=4), files) != base
    assert load_identity(replace(CONFIG, instance_group=(InstanceGroup(kind="KIND_CPU"),)), files) != base
    write(tmp_path / "model.onnx", "new weights")
    assert load_identity(CONFIG, folder_state(tmp_path)) != base


def test_version_app_names_round_trip() -> None:
    assert parse_version_app(version_app("fraud", 3, "ab12")) == ("fraud", 3, "ab12")
    assert parse_version_app(version_app("fraud", 3)) == ("fraud", 3, None)
    assert parse_version_app("fraud") is None and parse_version_app("infergrid:server") is None


def test_routes_carry_batching_and_compare_by_content() -> None:
    route = route_for(2, "m:v2@x", CONFIG)
    assert route == Route(2, "m:v2@x", batch_rows=8, queue_delay_us=100)
    assert Route.from_dict(route.to_dict()) == route
    assert routes_token([route]) == routes_token([Route.from_dict(dict(reversed(route.to_dict().items())))])
    assert routes_token([route]) != routes_token([replace(route, queue_delay_us=200)])
    assert route_for(2, "m:v2@x", replace(CONFIG, dynamic_batching=None)).batch_rows == 0


def test_config_as_json_reads_like_config_pbtxt() -> None:
    text = ('{"name": "m", "backend": "onnxruntime", "max_batch_size": "8",'
            ' "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}],'
            ' "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],'
            ' "dynamic_batching": {"max_queue_delay_microseconds": "100"},'
            ' "version_policy": {"specific": {"versions": [1, "3"]}},'
            ' "parameters": {"num_cpus": {"string_value": "0.25"}}}')
    config = parse_config_json(text, "m load request", "m")
    assert config.max_batch_size == 8 and config.inputs[0].dims == (4,)
    assert config.version_policy.versions == (1, 3) and config.parameters == {"num_cpus": "0.25"}
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    with pytest.raises(ConfigError, match="max_batch_size"):
        parse_config_json('{"max_batch_size": "many"}', "m load request", "m")
    with pytest.raises(ConfigError, match="m load request: Failed to load JSON"):
        parse_config_json("{", "m load request", "m")
    with pytest.raises(ConfigError, match="differs from the folder name"):
        parse_config_json('{"name": "other"}', "m load request", "m")


def test_file_events_see_a_version_folder_moved_in(tmp_path: Path) -> None:
    events = FileEvents.open()
    if events is None:
        pytest.skip("no inotify here")
    try:
        model = tmp_path / "m"
        model.mkdir()
        assert events.watch(model)
        write(tmp_path / "staging" / "model.onnx")
        os.rename(tmp_path / "staging", model / "7")
        write(model / "config.pbtxt")
        deadline = time.monotonic() + 5
        seen = []
        while time.monotonic() < deadline and len(seen) < 2:
            seen += events.read()
            time.sleep(0.01)
        assert [e.path.name for e in seen if e.moved_in] == ["7"]
        assert any(e.path.name == "config.pbtxt" for e in seen)
    finally:
        events.close()

