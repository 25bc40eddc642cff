"""TF Serving's --model_config_file: parsed against its ModelServerConfig, laid over each model folder,
and its version labels resolved by the data plane for every protocol."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from backends.errors import ConfigError, ModelNotFound
from backends.model_config import VersionPolicy
from deployments.dataplane.plane import DataPlane
from deployments.launch.flags import build_parser, check_args
from deployments.repository.roots import RepositoryRoots
from deployments.repository.tfserving_config import (
    ConfigFileFollower,
    ModelOverride,
    parse_model_config_file,
    read_model_config_file,
)
from deployments.repository.watch import folder_state, load_identity

CONFIG = """
model_config_list {
  config {
    name: 'resnet'
    base_path: '/models/resnet/'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 3 versions: 4 } }
    version_labels { key: 'stable' value: 3 }
    version_labels { key: 'canary' value: 4 }
  }
  config { name: "fraud" base_path: "fraud" model_version_policy { all {} } }
  config { name: "plain" base_path: "/m/plain" }
}
"""


def test_model_server_config_names_folders_policies_and_labels(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    models = parse_model_config_file(CONFIG, "models.config")
    assert models.folders == {"resnet": Path("/models/resnet"), "fraud": tmp_path / "fraud",
                              "plain": Path("/m/plain")}  # a relative base_path: from the working directory
    assert models.overrides["resnet"] == ModelOverride(VersionPolicy("specific", versions=(3, 4)),
                                                       (("canary", 4), ("stable", 3)))
    assert models.overrides["fraud"].version_policy == VersionPolicy("all")
    assert models.overrides["plain"] == ModelOverride(None, ())  # the folder's own policy (latest 1)


@pytest.mark.parametrize(("text", "problem"), [
    ("model_config_list { config { name: 'a' base_path: '/a' version_label { key: 'x' value: 1 } } }",
     'models.config:1:56: Message type "tensorflow.serving.ModelConfig" has no field named "version_label"'),
    ("model_config_list { config { base_path: '/a' } }", "config[0].name: '' is not a model name"),
    ("model_config_list { config { name: 'a' } }", "config[0].base_path: not set"),
    ("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
     "config[1].name: model 'a' is configured twice"),
    ("model_config_list { config { name: 'a' base_path: '/a' version_labels { key: '7' value: 1 } } }",
     "a label is a name, not a number"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_version_policy { specific { } } } }",
     "model_version_policy.specific.versions: list at least one version"),
])
def test_bad_model_server_configs_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model_config_file(text, "models.config")
    assert problem in str(caught.value)


def test_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_model_config_file(tmp_path / "missing.config")


def test_the_config_file_policy_and_labels_lay_over_the_folder(tmp_path: Path) -> None:
    base = tmp_path / "resnet"
    for version in (2, 3, 4):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "model.onnx").write_bytes(b"not read by a scan")
    text = CONFIG.replace("/models/resnet/", str(base))
    models = parse_model_config_file(text, "models.config")
    roots = RepositoryRoots([], {"resnet": models.folders["resnet"]}, models.overrides)
    entry = roots.scan("resnet")
    assert entry.error is None and entry.served_versions == [4, 3]
    assert dict(entry.config.version_labels) == {"stable": 3, "canary": 4}
    shutil.rmtree(base / "3")
    shutil.rmtree(base / "4")
    assert "selects none of the versions on disk [2]" in roots.scan("resnet").error


class _Servable:
    """Records the version each call reached (the plane's routing is not under test here)."""

    def __init__(self) -> None:
        self.asked: list = []

    async def infer(self, inputs, version, timeout_s):
        self.asked.append(version)
        return 3, {}

    async def ready(self, version=None):
        self.asked.append(version)
        return True


def test_the_data_plane_turns_a_label_into_its_version() -> None:
    servable = _Servable()
    plane = DataPlane("resnet", servable, version_labels={"stable": 3, "canary": 4})  # type: ignore[arg-type]
    asyncio.run(plane.infer({}, "canary"))
    asyncio.run(plane.infer({}, "3"))
    asyncio.run(plane.infer({}, None))
    assert asyncio.run(plane.ready("stable"))
    assert servable.asked == ["4", "3", None, "3"]
    with pytest.raises(ModelNotFound, match="no version or version label 'beta'"):
        asyncio.run(plane.infer({}, "beta"))


def test_model_config_file_flag_and_its_exclusions() -> None:
    parser = build_parser(lambda a: 0, lambda a: 0, lambda a: 0)
    args = check_args(parser, parser.parse_args(["serve", "--model_config_file", "/etc/models.config"]))
    assert args.model_config_file == "/etc/models.config" and args.repositories == []
    with pytest.raises(SystemExit):
        check_args(parser, parser.parse_args(["serve", "--model_config_file", "/c", "--model_name", "a",
                                              "--model_base_path", "/a"]))


BATCHING = """max_batch_size { value: 8 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 4 }
num_batch_threads { value: 2 }
pad_variable_length_inputs: true
allowed_batch_sizes: 4
allowed_batch_sizes: 8
"""


def test_batching_parameters_map_onto_dynamic_batching() -> None:
    from backends.model_config import DynamicBatching
    from deployments.repository.tfserving_batching import parse_batching_parameters

    batching = parse_batching_parameters(BATCHING, "batching.txt")
    assert batching.max_batch_size == 8
    assert batching.dynamic_batching == DynamicBatching(preferred_batch_size=(4, 8), max_queue_delay_microseconds=20000,
                                                        max_queue_size=32)
    defaults = parse_batching_parameters("", "batching.txt")  # TF Serving's defaults
    assert (defaults.max_batch_size, defaults.dynamic_batching.max_queue_delay_microseconds) == (1000, 0)


@pytest.mark.parametrize(("text", "problem"), [
    ("max_batch_size: 8", "batching.txt:1:17: 'max_batch_size: 8': Expected \"{\""),
    ("max_batchsize { value: 8 }", 'has no field named "max_batchsize"'),
    ("max_batch_size { value: 0 }", "max_batch_size: must be >= 1"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "allowed_batch_sizes: must increase and end at"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4", "must increase"),
])
def test_bad_batching_parameters_name_the_field(text: str, problem: str) -> None:
    from deployments.repository.tfserving_batching import parse_batching_parameters

    with pytest.raises(ConfigError) as caught:
        parse_batching_parameters(text, "batching.txt")
    assert problem in str(caught.value)


def test_enable_batching_batches_models_without_their_own(tmp_path: Path) -> None:
    from deployments.repository.tfserving_batching import parse_batching_parameters

    for name, config in (("plain", ""), ("own", "max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 7 }")):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.onnx").write_bytes(b"not read by a scan")
        (tmp_path / name / "config.pbtxt").write_text(config)
    roots = RepositoryRoots([tmp_path], batching=parse_batching_parameters(BATCHING, "batching.txt"))
    plain, own = roots.scan("plain").config, roots.scan("own").config
    assert plain.max_batch_size == 8 and plain.dynamic_batching.max_queue_delay_microseconds == 20000
    assert own.max_batch_size == 4 and own.dynamic_batching.max_queue_delay_microseconds == 7  # its own wins
    assert RepositoryRoots([tmp_path]).scan("plain").config.dynamic_batching is None
    assert plain.triton["dynamic_batching"] == {"max_queue_delay_microseconds": 20000, "preferred_batch_size": [4, 8],
                                                "default_queue_policy": {"max_queue_size": 32}}


def test_per_model_batching_parameters_come_from_the_newest_served_savedmodel(tmp_path: Path) -> None:
    from dataclasses import replace

    from deployments.repository.tfserving_batching import parse_batching_parameters

    model = tmp_path / "m"
    for version in (1, 2):
        (model / str(version)).mkdir(parents=True)
        (model / str(version) / "saved_model.pb").write_bytes(b"not read by a scan")
    (model / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 2 }")
    shared = parse_batching_parameters(BATCHING, "batching.txt")
    per_model = RepositoryRoots([], {"m": model}, batching=replace(shared, per_model=True))
    assert per_model.scan("m").config.max_batch_size == 8  # the newest (2) has no file: --batching_parameters_file's
    (model / "2" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 } batch_timeout_micros { value: 9 }")
    config = per_model.scan("m").config
    assert (config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds) == (4, 9)
    assert RepositoryRoots([], {"m": model}, batching=shared).scan("m").config.max_batch_size == 8  # flag off
    pinned = RepositoryRoots([], {"m": model}, {"m": ModelOverride(VersionPolicy(kind="specific", versions=(1,)))},
                             batching=replace(shared, per_model=True))
    assert pinned.scan("m").config.max_batch_size == 2  # the served version's file
    (model / "2" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 } bogus: 1")
    assert "2/batching_params.pbtxt:1:29" in per_model.scan("m").error


def test_per_model_batching_needs_enable_batching() -> None:
    from deployments.launch.tfserving_start import tf_serving_start

    parser = build_parser(lambda a: 0, lambda a: 0, lambda a: 0)
    started, problem = tf_serving_start(check_args(parser, parser.parse_args(
        ["serve", "--model_name", "m", "--model_base_path", "/m", "--enable_batching",
         "--enable_per_model_batching_parameters"])))
    assert problem is None and started.batching.per_model
    problem = tf_serving_start(check_args(parser, parser.parse_args(
        ["serve", "--model_name", "m", "--model_base_path", "/m", "--enable_per_model_batching_parameters"])))[1]
    assert "needs --enable_batching" in problem


def test_a_followed_config_file_gives_each_valid_change_once(tmp_path: Path, caplog) -> None:
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: 'a' base_path: 'a' } }")
    follower = ConfigFileFollower(path, tmp_path, poll_s=5)
    assert follower.poll(100.0).folders == {"a": tmp_path / "a"}  # relative: from the CLI's directory
    path.write_text("model_config_list { config { name: 'b' base_path: '/b' } }")
    assert follower.poll(101.0) is None  # not yet: every poll_s
    assert follower.poll(105.0).folders == {"b": Path("/b")}
    assert follower.poll(110.0) is None  # unchanged
    path.write_text("model_config_list { config { name: 'b' bogus: 1 } }")
    assert follower.poll(115.0) is None and "still serving its last good config" in caplog.text
    path.unlink()
    assert follower.poll(120.0) is None and "cannot read" in caplog.text


def test_renamed_roots_serve_the_new_names_and_labels_load_nothing(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.onnx").write_bytes(b"not read by a scan")
    roots = RepositoryRoots([], {"a": tmp_path / "a"})
    labelled = {"a": ModelOverride(None, (("stable", 1),))}
    before = roots.scan("a")
    roots.rename({"a": tmp_path / "a", "b": tmp_path / "b"}, labelled)
    assert roots.model_names() == ["a", "b"] and dict(roots.scan("a").config.version_labels) == {"stable": 1}
    files = folder_state(tmp_path / "a" / "1")
    assert load_identity(before.config, files) == load_identity(roots.scan("a").config, files)  # no reload


def test_config_file_poll_flag() -> None:
    parser = build_parser(lambda a: 0, lambda a: 0, lambda a: 0)
    args = check_args(parser, parser.parse_args(["serve", "--model_config_file", "/c",
                                                 "--model_config_file_poll_wait_seconds", "30"]))
    assert args.model_config_file_poll_wait_seconds == 30.0
    assert check_args(parser, parser.parse_args(["serve", "--model_config_file", "/c"])) \
        .model_config_file_poll_wait_seconds == 0.0  # TF Serving's default: read at start only
    from deployments.launch.tfserving_start import tf_serving_start

    explicit = check_args(parser, parser.parse_args(["serve", "--model_config_file", "/c", "--model-control-mode",
                                                     "explicit", "--model_config_file_poll_wait_seconds", "5"]))
    assert "needs --model-control-mode poll, not explicit" in tf_serving_start(explicit)[1]


def test_a_reload_requests_config_names_absolute_folders(tmp_path: Path) -> None:
    from tensorflow_serving.config import model_server_config_pb2

    from deployments.repository.tfserving_config import parse_model_server_config

    message = model_server_config_pb2.ModelServerConfig()
    model = message.model_config_list.config.add(name="a", base_path=str(tmp_path / "a"))
    model.version_labels["stable"] = 2
    models = parse_model_server_config(message.SerializeToString(), "ReloadConfigRequest.config", None)
    assert models.folders == {"a": tmp_path / "a"} and models.overrides["a"].version_labels == (("stable", 2),)
    model.base_path = "relative/a"
    with pytest.raises(ConfigError, match=r"config\[0\].base_path: 'relative/a' is relative"):
        parse_model_server_config(message.SerializeToString(), "ReloadConfigRequest.config", None)
    assert parse_model_server_config(message.SerializeToString(), "r", tmp_path).folders == {"a": tmp_path / "relative/a"}
    with pytest.raises(ConfigError, match="not a ModelServerConfig"):
        parse_model_server_config(b"\xff\xff\xff", "ReloadConfigRequest.config", None)


def test_a_reload_refuses_a_base_path_that_is_no_folder(tmp_path: Path) -> None:
    from tensorflow_serving.config import model_server_config_pb2

    from deployments.repository.tfserving_config import parse_reload_config

    message = model_server_config_pb2.ModelServerConfig()
    message.model_config_list.config.add(name="a", base_path=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"model 'a': base_path '.*/a' is not a folder"):
        parse_reload_config(message.SerializeToString(), "ReloadConfigRequest.config")
    (tmp_path / "a").mkdir()
    assert parse_reload_config(message.SerializeToString(), "r").folders == {"a": tmp_path / "a"}


@pytest.mark.parametrize("labels, problem", [
    ({"stable": 9}, "label 'stable' names version 9, which does not serve"),
    ({"7": 1}, "'7' is not a label"), ({"": 1}, "is not a label"),
    ({"stable": "2"}, "'2' is not a version number"), ({"stable": True}, "True is not a version number"),
    ({"stable": 0}, "0 is not a version number"), ({3: 1}, "3 is not a label")])
def test_labels_asked_for_must_name_served_versions(labels: dict, problem: str) -> None:
    from deployments.repository.tfserving_config import served_labels

    assert served_labels({"canary": 2, "stable": 1}, [1, 2], "fraud") == (("canary", 2), ("stable", 1))
    assert served_labels({}, [1], "fraud") == ()
    with pytest.raises(ConfigError, match=problem):
        served_labels(labels, [1, 2], "fraud labels request")
