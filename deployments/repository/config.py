"""config.pbtxt -> ``ModelConfig``: parsed against Triton's schema, validated, warnings for the rest.

The text (or JSON) is parsed into Triton's own ``ModelConfig`` message first
(``deployments.repository.triton_schema``), so a syntax error, a misspelt field or a wrong type is an
error naming the file, line and field, as in Triton. What parses is then checked for meaning here;
errors name the file and the field (``fraud/config.pbtxt: input[0].dims: ...``) because the person
reading them is editing that file. A valid Triton field that infergrid does not honour
(``optimization``, ``sequence_batching``...) is a warning, logged once, never a failure; the list of
fields and what is honoured is in docs/model-config.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from backends.dtypes import config_to_v2
from backends.errors import ConfigError
from backends.model_config import (
    COMPOSITE_PLATFORMS,
    PLATFORMS,
    TRITON_PYTHON,
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    TensorConfig,
    VersionPolicy,
)
from deployments.repository.autoscaling import autoscaling_from_parameters
from deployments.repository.triton_schema import TextMessage, parse_json, parse_text, to_dict, to_fields

__all__ = ["parse_config", "parse_config_json", "load_config_file", "SUPPORTED_FIELDS"]

SUPPORTED_FIELDS = frozenset({
    "name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching",
    "instance_group", "version_policy", "default_model_filename", "parameters", "ensemble_scheduling",
    "model_warmup",  # run by the version's replicas from ModelConfig.triton (backends.warmup)
})
_INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")


class _Reader:
    """Typed access to one text message, with the field path for error messages."""

    def __init__(self, message: TextMessage, where: str, warnings: list[str]) -> None:
        self.message, self.where, self.warnings = message, where, warnings

    def fail(self, field: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}{field}: {problem}")

    def one(self, field: str, kind: type, default: Any = None) -> Any:
        values = self.message.get(field, [])
        if not values:
            return default
        if len(values) > 1:
            raise self.fail(field, f"given {len(values)} times, expected once")
        value = values[0]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise self.fail(field, f"expected {kind.__name__}, got {value!r}")
        return value

    def ints(self, field: str) -> tuple[int, ...]:
        values = self.message.get(field, [])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise self.fail(field, f"expected integers, got {values!r}")
        return tuple(values)

    def children(self, field: str) -> list[_Reader]:
        values = self.message.get(field, [])
        readers = []
        for index, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.fail(f"{field}[{index}]", f"expected a message {{...}}, got {value!r}")
            readers.append(_Reader(value, f"{self.where}{field}[{index}].", self.warnings))
        return readers

    def child(self, field: str) -> _Reader | None:
        readers = self.children(field)
        if len(readers) > 1:
            raise self.fail(field, f"given {len(readers)} times, expected once")
        return readers[0] if readers else None

    def warn_unknown(self, known: frozenset[str] | set[str]) -> None:
        for field in self.message:
            if field not in known:
                self.warnings.append(f"{self.where}{field}: a Triton field infergrid does not honour; ignored "
                                     f"(see docs/model-config.md)")


def _tensor(reader: _Reader, batching: bool) -> TensorConfig:
    reader.warn_unknown({"name", "data_type", "dims", "reshape", "label_filename"})
    name = reader.one("name", str)
    if not name:
        raise reader.fail("name", "missing")
    data_type = reader.one("data_type", str)
    if data_type is None:
        raise reader.fail("data_type", "missing")
    try:
        datatype = config_to_v2(data_type)
    except ConfigError as exc:
        raise reader.fail("data_type", str(exc)) from exc
    dims = reader.ints("dims")
    if any(d < -1 or d == 0 for d in dims):
        raise reader.fail("dims", f"each dimension must be -1 or positive, got {list(dims)}")
    if not dims and not batching:
        raise reader.fail("dims", "missing (a tensor needs at least one dimension without batching)")
    shape = reader.child("reshape")
    reshape = shape.ints("shape") if shape is not None else None
    return TensorConfig(name=name, datatype=datatype, dims=dims, reshape=reshape)


def _platform(reader: _Reader) -> str | None:
    platform = reader.one("platform", str)
    backend = reader.one("backend", str)
    for field, value in (("platform", platform), ("backend", backend)):
        if value is not None and value not in PLATFORMS:
            raise reader.fail(field, f"{value!r} is not served; use one of {', '.join(PLATFORMS)}")
    if platform and backend and PLATFORMS[platform] != PLATFORMS[backend]:
        raise reader.fail("backend", f"{backend!r} contradicts platform {platform!r}")
    chosen = platform or backend
    return PLATFORMS[chosen] if chosen else None


def _dynamic_batching(reader: _Reader | None) -> DynamicBatching | None:
    if reader is None:
        return None
    reader.warn_unknown({"preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy"})
    delay = reader.one("max_queue_delay_microseconds", int, 0)
    if delay < 0:
        raise reader.fail("max_queue_delay_microseconds", "must be >= 0")
    preferred = reader.ints("preferred_batch_size")
    if any(size <= 0 for size in preferred):
        raise reader.fail("preferred_batch_size", "sizes must be positive")
    max_queue_size = timeout_us = 0
    policy = reader.child("default_queue_policy")
    if policy is not None:
        policy.warn_unknown({"max_queue_size", "default_timeout_microseconds"})
        max_queue_size = policy.one("max_queue_size", int, 0)
        if max_queue_size < 0:
            raise policy.fail("max_queue_size", "must be >= 0 (0: unbounded)")
        timeout_us = policy.one("default_timeout_microseconds", int, 0)
        if timeout_us < 0:
            raise policy.fail("default_timeout_microseconds", "must be >= 0 (0: no timeout)")
    return DynamicBatching(preferred_batch_size=preferred, max_queue_delay_microseconds=delay,
                           max_queue_size=max_queue_size, default_timeout_microseconds=timeout_us)


def _instance_group(reader: _Reader) -> InstanceGroup:
    reader.warn_unknown({"name", "count", "kind", "gpus"})
    count = reader.one("count", int, 1)
    if count < 1:
        raise reader.fail("count", "must be >= 1")
    kind = reader.one("kind", str, "KIND_AUTO")
    if kind not in _INSTANCE_KINDS:
        raise reader.fail("kind", f"{kind!r} is not one of {', '.join(_INSTANCE_KINDS)}")
    return InstanceGroup(count=count, kind=kind, gpus=reader.ints("gpus"))


def _version_policy(reader: _Reader | None) -> VersionPolicy:
    if reader is None:
        return VersionPolicy()
    reader.warn_unknown({"latest", "all", "specific"})
    chosen = [name for name in ("latest", "all", "specific") if name in reader.message]
    if len(chosen) > 1:
        raise reader.fail("", f"choose one of latest, all, specific; got {', '.join(chosen)}")
    if "all" in chosen:
        return VersionPolicy(kind="all")
    if "specific" in chosen:
        versions = reader.child("specific").ints("versions")  # type: ignore[union-attr]
        if not versions:
            raise reader.fail("specific.versions", "list at least one version")
        return VersionPolicy(kind="specific", versions=versions)
    latest = reader.child("latest")
    num = latest.one("num_versions", int, 1) if latest is not None else 1
    if num < 1:
        raise reader.fail("latest.num_versions", "must be >= 1")
    return VersionPolicy(kind="latest", num_versions=num)


def _parameters(reader: _Reader) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for entry in reader.children("parameters"):
        key = entry.one("key", str)
        value = entry.child("value")
        text = value.one("string_value", str) if value is not None else None
        if key is None or text is None:
            raise entry.fail("", 'expected { key: "..." value: { string_value: "..." } }')
        parameters[key] = text
    return parameters


def _tensor_map(reader: _Reader, field: str) -> tuple[tuple[str, str], ...]:
    """A ``map<string, string>`` field: repeated ``{ key: "..." value: "..." }`` entries."""
    pairs = []
    for entry in reader.children(field):
        key, value = entry.one("key", str), entry.one("value", str)
        if not key or not value:
            raise entry.fail("", 'expected { key: "<member tensor>" value: "<ensemble tensor>" }')
        pairs.append((key, value))
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise reader.fail(field, f"a member tensor is mapped twice: {keys}")
    return tuple(pairs)


def _ensemble_step(reader: _Reader) -> EnsembleStep:
    reader.warn_unknown({"model_name", "model_version", "input_map", "output_map"})
    name = reader.one("model_name", str)
    if not name:
        raise reader.fail("model_name", "missing")
    version = reader.one("model_version", int, -1)
    if version == 0 or version < -1:
        raise reader.fail("model_version", f"must be -1 (newest) or a version number, got {version}")
    return EnsembleStep(name, version, _tensor_map(reader, "input_map"), _tensor_map(reader, "output_map"))


def _ensemble_steps(reader: _Reader, platform: str) -> tuple[EnsembleStep, ...]:
    scheduling = reader.child("ensemble_scheduling")
    if platform != "ensemble":
        if scheduling is not None:
            raise reader.fail("ensemble_scheduling", 'only an ensemble has steps (set platform: "ensemble")')
        return ()
    if scheduling is None or not scheduling.message.get("step"):
        raise reader.fail("ensemble_scheduling", "an ensemble needs ensemble_scheduling { step [ ... ] }")
    scheduling.warn_unknown({"step"})
    return tuple(_ensemble_step(r) for r in scheduling.children("step"))


def parse_config(text: str, source: str, model_name: str) -> ModelConfig:
    """Parse a config.pbtxt's text.

    Args:
        text: the file's contents (may be empty: everything then comes from the model itself).
        source: the path shown in errors, e.g. ``fraud/config.pbtxt``.
        model_name: the model folder's name; a ``name`` field must agree with it.

    Raises:
        ConfigError: the text is not a valid Triton ``ModelConfig`` (the message starts
            ``<source>:<line>:<column>:``), or a field's value is invalid.
    """
    return _from_message(parse_text(text, source), source, model_name)


def parse_config_json(text: str, source: str, model_name: str) -> ModelConfig:
    """Parse a config given as JSON in Triton's mapping (the load API's ``parameters.config``):
    camelCase or snake_case field names, 64-bit integers as numbers or strings.

    Raises:
        ConfigError: not a JSON ``ModelConfig`` object, or a field's value is invalid.
    """
    return _from_message(parse_json(text, source), source, model_name)


def _from_message(message: Message, source: str, model_name: str) -> ModelConfig:
    return _config_from_message(to_fields(message), source, model_name, to_dict(message))


def _config_from_message(message: TextMessage, source: str, model_name: str, triton: dict) -> ModelConfig:
    warnings: list[str] = []
    reader = _Reader(message, f"{source}: ", warnings)
    reader.warn_unknown(SUPPORTED_FIELDS)
    name = reader.one("name", str, model_name)
    if name != model_name:
        raise reader.fail("name", f"{name!r} differs from the folder name {model_name!r}")
    max_batch_size = reader.one("max_batch_size", int, 0)
    if max_batch_size < 0:
        raise reader.fail("max_batch_size", "must be >= 0")
    batching = max_batch_size > 0
    inputs = tuple(_tensor(r, batching) for r in reader.children("input"))
    outputs = tuple(_tensor(r, batching) for r in reader.children("output"))
    for field, tensors in (("input", inputs), ("output", outputs)):
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise reader.fail(field, f"duplicate names in {names}")
    parameters = _parameters(reader)
    platform = _platform(reader) or ""
    groups = tuple(_instance_group(r) for r in reader.children("instance_group"))
    autoscaling = autoscaling_from_parameters(parameters, sum(g.count for g in groups) or 1, max_batch_size, source)
    if platform == "python" and "pipeline" not in parameters:
        platform = TRITON_PYTHON  # Triton's Python backend: <version>/model.py
    if autoscaling is not None and platform in COMPOSITE_PLATFORMS:
        warnings.append(f'{source}: parameters["autoscaling.*"]: an ensemble or pipeline runs its instance_group '
                        "count of replicas (its members scale on their own configs); ignored")
        autoscaling = None
    return ModelConfig(
        name=name,
        platform=platform,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
        dynamic_batching=_dynamic_batching(reader.child("dynamic_batching")),
        instance_group=groups,
        autoscaling=autoscaling,
        version_policy=_version_policy(reader.child("version_policy")),
        default_model_filename=reader.one("default_model_filename", str),
        parameters=parameters,
        ensemble_steps=_ensemble_steps(reader, platform),
        warnings=tuple(warnings),
        triton=triton,
    )


def load_config_file(model_dir: Path, name: str | None = None) -> ModelConfig:
    """Read ``<model_dir>/config.pbtxt``, else ``config.json`` (Triton's JSON mapping, as the load
    API takes it); neither is an empty config.

    Raises:
        ConfigError: the file is unreadable or invalid.
    """
    path = model_dir / "config.pbtxt"
    as_json = not path.exists() and (model_dir / "config.json").exists()
    path = model_dir / "config.json" if as_json else path
    name = name or model_dir.name  # the model's name (its folder's, unless named one by one)
    source = f"{name}/{path.name}"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from exc
    return parse_config_json(text, source, name) if as_json else parse_config(text, source, name)
