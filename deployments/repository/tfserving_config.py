"""TF Serving's ``--model_config_file``: a text-format ``ModelServerConfig`` -> the models it names.

Parsed against TF Serving's own message (``tensorflow_serving.config.model_server_config_pb2`` from
``tensorflow-serving-api``; those config protos import no TensorFlow), so a misspelt field is an error
with its line and column, as ``tensorflow_model_server`` reports it. Each ``model_config_list.config``
becomes a model folder named one by one (``base_path``, TF Serving's ``<base>/<version>/`` layout),
with its ``model_version_policy`` and ``version_labels`` applied over whatever its folder says.

Read and honoured: ``name``, ``base_path``, ``model_version_policy`` (``latest``/``all``/``specific``),
``version_labels``. Read and ignored (logged once): ``model_platform`` other than ``tensorflow``
(the platform comes from the files, any framework), ``logging_config``, ``model_type``.
``custom_model_config`` is refused: infergrid has no custom sources. Pure: no Ray, no TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from backends.errors import ConfigError
from backends.model_config import VersionPolicy
from deployments.repository.scan import MODEL_NAME
from deployments.repository.triton_schema import read_config_text, text_format_error

__all__ = ["ModelOverride", "TfServingModels", "ConfigFileFollower", "checked_labels", "served_labels",
           "parse_model_config_file", "parse_model_server_config", "parse_reload_config", "models_of_config", "read_model_config_file"]

logger = logging.getLogger("infergrid")


@dataclass(frozen=True)
class ModelOverride:
    """What a TF Serving config (or TorchServe's registry) says of one model, over its folder's own config."""

    version_policy: VersionPolicy | None = None  # None: the folder's own (Triton's default: latest 1)
    version_labels: tuple[tuple[str, int], ...] = ()
    replicas: int = 0  # TorchServe's workers: replicas of each version (0: the folder's instance_group)


@dataclass(frozen=True)
class TfServingModels:
    """The models a ``ModelServerConfig`` names: their folders and what it says of each."""

    folders: dict[str, Path] = field(default_factory=dict)
    overrides: dict[str, ModelOverride] = field(default_factory=dict)


def _policy(config: model_server_config_pb2.ModelConfig, where: str) -> VersionPolicy | None:
    if not config.HasField("model_version_policy"):
        return None
    policy = config.model_version_policy
    chosen = policy.WhichOneof("policy_choice")
    if chosen == "all":
        return VersionPolicy(kind="all")
    if chosen == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"{where}.model_version_policy.specific.versions: list at least one version")
        return VersionPolicy(kind="specific", versions=tuple(int(v) for v in policy.specific.versions))
    num = policy.latest.num_versions if chosen == "latest" and policy.latest.num_versions else 1
    return VersionPolicy(kind="latest", num_versions=num)


def checked_labels(labels: Mapping[str, Any], where: str) -> tuple[tuple[str, int], ...]:
    """Version labels as (label, version) pairs, sorted.

    Raises:
        ConfigError: a label that is empty or a number, a version that is not a version number.
    """
    checked = []
    for label, version in sorted(labels.items()):
        if not isinstance(label, str) or not label or label.isdigit():
            raise ConfigError(f"{where}.version_labels: {label!r} is not a label (a label is a name, not a number)")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"{where}.version_labels[{label!r}]: {version!r} is not a version number")
        checked.append((label, int(version)))
    return tuple(checked)


def _labels(config: model_server_config_pb2.ModelConfig, where: str) -> tuple[tuple[str, int], ...]:
    return checked_labels(dict(config.version_labels), where)


def served_labels(labels: Mapping[str, Any], served: Sequence[int], where: str) -> tuple[tuple[str, int], ...]:
    """``checked_labels`` whose versions all serve (TF Serving's rule without
    ``--allow_version_labels_for_unavailable_models``).

    Raises:
        ConfigError: as ``checked_labels``, or a label naming a version that does not serve.
    """
    checked = checked_labels(labels, where)
    for label, version in checked:
        if version not in served:
            raise ConfigError(f"{where}: label {label!r} names version {version}, which does not serve "
                              f"(served: {sorted(served)})")
    return checked


def parse_model_config_file(text: str, source: str, relative_to: Path | None = None) -> TfServingModels:
    """Parse a ``ModelServerConfig``'s text; a relative ``base_path`` is taken from ``relative_to``.

    Raises:
        ConfigError: not a valid ``ModelServerConfig`` (``<source>:<line>:<column>: ...``), or a
            model without a name or base path, a name twice, a bad label.
    """
    try:
        message = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as exc:
        raise text_format_error(exc, source) from None
    return models_of_config(message, source, relative_to or Path.cwd())


def parse_model_server_config(data: bytes, source: str, relative_to: Path | None) -> TfServingModels:
    """A serialized ``ModelServerConfig`` (``ModelService.HandleReloadConfigRequest``'s ``config``).

    Raises:
        ConfigError: as ``models_of_config``, or bytes that are no ``ModelServerConfig``.
    """
    from google.protobuf.message import DecodeError

    try:
        message = model_server_config_pb2.ModelServerConfig.FromString(data)
    except DecodeError as exc:
        raise ConfigError(f"{source}: not a ModelServerConfig: {exc}") from None
    return models_of_config(message, source, relative_to)


def parse_reload_config(data: bytes, source: str) -> TfServingModels:
    """``parse_model_server_config`` for a reload request: no working directory to take a relative
    ``base_path`` from (the server's is not the caller's), and every ``base_path`` must be a folder now.

    Raises:
        ConfigError: as ``parse_model_server_config``, a relative ``base_path``, or one that is no folder.
    """
    models = parse_model_server_config(data, source, None)
    for name, folder in models.folders.items():
        if not folder.is_dir():
            raise ConfigError(f"{source}: model {name!r}: base_path {str(folder)!r} is not a folder")
    return models


def models_of_config(message: model_server_config_pb2.ModelServerConfig, source: str,
                     relative_to: Path | None) -> TfServingModels:
    """The models a ``ModelServerConfig`` names; a relative ``base_path`` is taken from ``relative_to``
    (None: refused, there is no directory to take it from).

    Raises:
        ConfigError: a model without a name or base path, a name twice, a bad label or policy,
            ``custom_model_config``; the message names the field.
    """
    if message.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config: not supported (use model_config_list)")
    models = TfServingModels()
    for index, config in enumerate(message.model_config_list.config):
        where = f"{source}: model_config_list.config[{index}]"
        if not MODEL_NAME.match(config.name):
            raise ConfigError(f"{where}.name: {config.name!r} is not a model name")
        if config.name in models.folders:
            raise ConfigError(f"{where}.name: model {config.name!r} is configured twice")
        if not config.base_path:
            raise ConfigError(f"{where}.base_path: not set")
        if config.model_platform not in ("", "tensorflow"):
            logger.warning("%s.model_platform %r: ignored (the platform comes from the model files)",
                           where, config.model_platform)
        base = Path(config.base_path.removeprefix("file://"))
        if not base.is_absolute() and relative_to is None:
            raise ConfigError(f"{where}.base_path: {config.base_path!r} is relative; give an absolute path")
        models.folders[config.name] = (base if base.is_absolute() else relative_to / base).resolve()
        models.overrides[config.name] = ModelOverride(_policy(config, where), _labels(config, where))
    return models


def read_model_config_file(path: Path, relative_to: Path | None = None) -> TfServingModels:
    """Read ``--model_config_file``; a relative base path is taken from ``relative_to`` (default: the
    working directory, as ``tensorflow_model_server`` takes it).

    Raises:
        ConfigError: unreadable or invalid (see ``parse_model_config_file``).
    """
    return parse_model_config_file(read_config_text(path), str(path), relative_to)


class ConfigFileFollower:
    """TF Serving's ``--model_config_file_poll_wait_seconds``: the file re-read every ``poll_s``.

    ``poll(now)`` gives the models of a changed, valid text (None otherwise). A text that does not
    parse is logged once and changes nothing: the last good config keeps serving, as in TF Serving.
    """

    def __init__(self, path: Path, relative_to: Path, poll_s: float) -> None:
        self.path, self.relative_to, self.poll_s = Path(path), Path(relative_to), poll_s
        self._text: str | None = None
        self._refused: str | None = None
        self._next = 0.0

    def poll(self, now: float) -> TfServingModels | None:
        if now < self._next:
            return None
        self._next = now + self.poll_s
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            text = f"<unreadable: {exc}>"
            if text != self._refused:
                logger.error("%s: cannot read: %s; still serving its last good config", self.path, exc)
                self._refused = text
            return None
        if text == self._text:
            return None
        try:
            models = parse_model_config_file(text, str(self.path), self.relative_to)
        except ConfigError as exc:
            if text != self._refused:
                logger.error("%s; still serving its last good config", exc)
                self._refused = text
            return None
        if self._text is not None:
            logger.info("%s changed: now %s", self.path, ", ".join(sorted(models.folders)) or "no models")
        self._text, self._refused = text, None
        return models
