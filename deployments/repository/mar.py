"""TorchServe's model store: ``.mar`` archives (zip files made by ``torch-model-archiver``) unpacked
into model folders of our layout, so every protocol, the batcher and the controller serve them as any
other model.

``<cache>/<modelName>/config.pbtxt`` is written from the archive (backend ``torchserve``, one BYTES
input ``body``, BYTES outputs ``output`` and ``content_type``; batching, workers and the response
timeout from its ``model-config.yaml``: ``batchSize``, ``maxBatchDelay`` (ms), ``minWorkers``,
``maxWorkers``, ``responseTimeout`` (s), ``deviceType``) and ``<cache>/<modelName>/<version>/`` holds
the archive's files, its ``MAR-INF/MANIFEST.json`` included. The version number is chosen by the
caller (``deployments.repository.ts_registry``), by default ``modelVersion``'s leading integer
(``"2.0"`` -> 2; 1 without one); a ``modelVersion`` that is not that plain number is a version label
of that version (``/predictions/m/2.0``). An archive is unpacked again only when it changed (size,
modification time). Pure: files only.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backends.errors import ConfigError

__all__ = ["MarModel", "MarSettings", "archive_version", "mar_settings", "read_manifest", "unpack_mar",
           "whole_numbers", "write_model_config", "model_store_archives", "ts_config_text"]

MANIFEST = "MAR-INF/MANIFEST.json"
_SOURCE = ".infergrid-source"
_LEADING_INT = re.compile(r"^(\d+)")


@dataclass(frozen=True)
class MarSettings:
    """TorchServe's per-model settings we map: rows per batch, the batch delay, workers, device."""

    batch_size: int = 1
    max_batch_delay_ms: int = 100
    min_workers: int = 1
    max_workers: int = 0  # 0: as min_workers
    response_timeout_s: int = 120  # TorchServe's default_response_timeout
    job_queue_size: int = 0  # config.properties' job_queue_size: requests waiting per version (0: unbounded)
    device_type: str = ""  # "cpu" | "gpu" | "" (GPU where there is one)


@dataclass(frozen=True)
class MarModel:
    """One unpacked archive: the model's folder, its version number and label (TorchServe's version)."""

    name: str
    folder: Path
    version: int
    model_version: str
    settings: MarSettings

    @property
    def labels(self) -> tuple[tuple[str, int], ...]:
        """``modelVersion`` as a label of the version, unless it is the number itself."""
        return () if self.model_version == str(self.version) else ((self.model_version, self.version),)


def whole_numbers(data: dict, fields: tuple[tuple[str, str, int], ...], where: str) -> dict[str, int]:
    """TorchServe's numeric settings (``batchSize`` ...) of ``data`` by (key, field name, minimum) -> field: value.

    Raises:
        ConfigError: a value that is not a whole number >= its minimum; names the key.
    """
    values = {}
    for key, field, minimum in fields:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{where}: {key}: {value!r} is not a whole number >= {minimum}")
        values[field] = value
    return values


def mar_settings(yaml_text: str, where: str) -> MarSettings:
    """The settings of a ``model-config.yaml`` (TorchServe's names; other keys are the handler's).

    Raises:
        ConfigError: not YAML, or a setting of the wrong type; names the key.
    """
    import yaml

    try:
        data = yaml.safe_load(yaml_text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a mapping of settings is needed, not {type(data).__name__}")
    values = whole_numbers(data, (("batchSize", "batch_size", 1), ("maxBatchDelay", "max_batch_delay_ms", 0),
                                  ("minWorkers", "min_workers", 1), ("maxWorkers", "max_workers", 1),
                                  ("responseTimeout", "response_timeout_s", 1)), where)
    device = str(data.get("deviceType", "")).lower()
    if device not in ("", "cpu", "gpu"):
        raise ConfigError(f"{where}: deviceType: {device!r} is neither cpu nor gpu")
    return MarSettings(device_type=device, **values)


def ts_config_text(name: str, settings: MarSettings) -> str:
    """The model's config.pbtxt: the torchserve backend, its tensors, batching and workers."""
    kind = {"cpu": " kind: KIND_CPU", "gpu": " kind: KIND_GPU"}.get(settings.device_type, "")
    lines = [f'name: "{name}"', 'backend: "torchserve"', f"max_batch_size: {settings.batch_size}",
             'input [ { name: "body" data_type: TYPE_STRING dims: [ 1 ] } ]',
             'output [ { name: "output" data_type: TYPE_STRING dims: [ 1 ] },',
             '         { name: "content_type" data_type: TYPE_STRING dims: [ 1 ] } ]',
             f"instance_group [ {{ count: {settings.min_workers}{kind} }} ]"]
    delay_us = settings.max_batch_delay_ms * 1000 if settings.batch_size > 1 else 0
    queue = f" max_queue_size: {settings.job_queue_size}" if settings.job_queue_size else ""
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} default_queue_policy "
                 f"{{ default_timeout_microseconds: {settings.response_timeout_s * 1_000_000}{queue} }} }}")
    return "\n".join(lines) + "\n"


def archive_version(model_version: str) -> int:
    """The version number ``modelVersion`` suggests: its leading integer (``"2.0"`` -> 2), else 1."""
    leading = _LEADING_INT.match(model_version)
    return int(leading.group(1)) if leading and int(leading.group(1)) > 0 else 1


def read_manifest(archive_path: Path) -> dict:
    """The archive's ``MANIFEST.json`` ``model`` section (``modelName``, ``modelVersion``, ``handler`` ...).

    Raises:
        ConfigError: not a zip, or no valid manifest.
    """
    try:
        with zipfile.ZipFile(archive_path) as archive:
            return _manifest(archive, str(archive_path))["model"]
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{archive_path}: not a .mar archive: {exc}") from None


def write_model_config(folder: Path, name: str, settings: MarSettings) -> None:
    """Write the model's config.pbtxt, only when its text changes (an unchanged file is not an event)."""
    text = ts_config_text(name, settings)
    path = folder / "config.pbtxt"
    if not path.is_file() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _manifest(archive: zipfile.ZipFile, where: str) -> dict:
    try:
        manifest = json.loads(archive.read(MANIFEST))
        model = manifest["model"]
        if not isinstance(model.get("modelName"), str) or not model["modelName"] or not model.get("handler"):
            raise KeyError("modelName or handler")
    except KeyError as exc:
        raise ConfigError(f"{where}: {MANIFEST}: missing {exc} (is it a torch-model-archiver archive?)") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {MANIFEST}: not JSON: {exc}") from None
    return manifest


def _safe_members(archive: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    """Every member, refused if any would land outside the folder (an absolute path, ``..``)."""
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts:
            raise ConfigError(f"{where}: member {info.filename!r} would be written outside the model folder")
    return archive.infolist()


def unpack_mar(archive_path: Path, cache: Path, name: str | None = None, version: int | None = None,
               write_config: bool = True) -> MarModel:
    """Unpack ``archive_path`` as model ``name`` (default: its ``modelName``) under ``cache``, as
    ``version`` (default: ``archive_version`` of its ``modelVersion``); ``write_config`` false leaves
    the model's config.pbtxt to the caller.

    Raises:
        ConfigError: not a zip, no manifest, a bad ``model-config.yaml``, an unsafe member path.
    """
    where = str(archive_path)
    try:
        archive = zipfile.ZipFile(archive_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{where}: not a .mar archive: {exc}") from None
    with archive:
        manifest = _manifest(archive, where)
        model = manifest["model"]
        name = name or model["modelName"]
        model_version = str(model.get("modelVersion") or "1")
        version = version or archive_version(model_version)
        settings = MarSettings()
        if model.get("configFile"):
            try:
                settings = mar_settings(archive.read(model["configFile"]).decode(), f"{where}: {model['configFile']}")
            except KeyError:
                raise ConfigError(f"{where}: configFile {model['configFile']!r} is not in the archive") from None
        folder = cache / name
        target = folder / str(version)
        stat = archive_path.stat()
        source = f"{archive_path.resolve()} {stat.st_size} {stat.st_mtime_ns}"
        if not (target / _SOURCE).is_file() or (target / _SOURCE).read_text() != source:
            members = _safe_members(archive, where)
            staging = folder / f".{version}.unpacking"
            shutil.rmtree(staging, ignore_errors=True)
            archive.extractall(staging, members)
            (staging / _SOURCE).write_text(source)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    if write_config:
        write_model_config(folder, name, settings)
    return MarModel(name, folder, version, model_version, settings)


def model_store_archives(store: Path, models: list[str]) -> list[tuple[str | None, Path]]:
    """TorchServe's ``--models``: ``all`` (every ``.mar`` in the store), ``name=file.mar`` or ``file.mar``
    entries, comma-separated or repeated, each path relative to the store -> (name, archive) pairs
    (name None: the archive's ``modelName``).

    Raises:
        ConfigError: an archive that is not in the store.
    """
    entries = [part.strip() for entry in models for part in entry.split(",") if part.strip()]
    if not entries or "all" in entries:
        return [(None, path) for path in sorted(store.glob("*.mar"))]
    archives: list[tuple[str | None, Path]] = []
    for item in entries:
        name, _, file = item.rpartition("=")
        path = Path(file) if Path(file).is_absolute() else store / file
        if not path.is_file():
            raise ConfigError(f"--models {item}: {path} is not in the model store {store}")
        archives.append((name or None, path))
    return archives
