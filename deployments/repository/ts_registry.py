"""TorchServe's model registry: which archive is registered under which name and version, the
default version of each name and its workers, as ``torchserve`` keeps them, turned into what the
controller serves: one model folder per name (``deployments.repository.mar`` unpacks the archives
into it) and a ``ModelOverride`` laid over that folder's config (the registered versions as a
``specific`` version policy, TorchServe's version strings as version labels, the default version as
the label an unversioned request follows, the workers as replicas of each version).

TorchServe's rules, kept: a name's first registered version is its default until ``set-default``;
registering a version already registered is a conflict (409); the default version cannot be
unregistered while other versions of the name are registered. Archives come only from the model
store (the operator put them there: TorchServe's trust model); URLs are refused. Pure: files and
values; the controller owns one registry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from backends.errors import Conflict, InvalidRequest, ModelNotFound
from backends.model_config import VersionPolicy
from deployments.repository.mar import MarSettings, archive_version, read_manifest, unpack_mar, write_model_config
from deployments.repository.scan import MODEL_NAME
from deployments.repository.tfserving_config import ModelOverride

__all__ = ["DEFAULT_LABEL", "RegisterParams", "TsVersion", "TsModel", "TorchServeRegistry"]

DEFAULT_LABEL = ""  # in a model's version labels: the version unversioned requests reach (plane.Door.version)


@dataclass(frozen=True)
class RegisterParams:
    """What a registration sets over the archive's ``model-config.yaml`` (None: the archive's, else
    TorchServe's default)."""

    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    initial_workers: int | None = None
    max_workers: int | None = None
    response_timeout_s: int | None = None

    def over(self, settings: MarSettings, default_workers: int) -> MarSettings:
        """``settings`` with these parameters laid over (workers: the parameter, the archive's, the default)."""
        workers = self.initial_workers or (settings.min_workers if settings.min_workers > 1 else default_workers)
        return replace(settings, batch_size=self.batch_size or settings.batch_size,
                       max_batch_delay_ms=settings.max_batch_delay_ms if self.max_batch_delay_ms is None
                       else self.max_batch_delay_ms,
                       min_workers=workers, max_workers=max(self.max_workers or settings.max_workers, workers),
                       response_timeout_s=self.response_timeout_s or settings.response_timeout_s)


@dataclass(frozen=True)
class TsVersion:
    """One registered archive: its version number here, TorchServe's version string, where it came from."""

    version: int
    model_version: str
    url: str
    settings: MarSettings
    at_startup: bool = False


@dataclass(frozen=True)
class TsModel:
    """A registered name: its folder, its versions in registration order, the default one, its workers."""

    name: str
    folder: Path
    versions: tuple[TsVersion, ...]
    default: int
    workers: int
    max_workers: int

    def find(self, model_version: str | None) -> TsVersion:
        """The version a TorchServe path names: its version string, our number, or None (the default).

        Raises:
            ModelNotFound: no such version of this model.
        """
        if model_version in (None, ""):
            return next(v for v in self.versions if v.version == self.default)
        for item in self.versions:
            if model_version in (item.model_version, str(item.version)):
                return item
        raise ModelNotFound(f"Model version: {model_version} does not exist for model: {self.name}")

    @property
    def override(self) -> ModelOverride:
        """What the model's folder is served with: these versions, their labels, the default, the workers."""
        labels = {item.model_version: item.version for item in self.versions
                  if item.model_version != str(item.version)}
        labels[DEFAULT_LABEL] = self.default
        return ModelOverride(VersionPolicy(kind="specific", versions=tuple(v.version for v in self.versions)),
                             tuple(sorted(labels.items())), self.workers)


class TorchServeRegistry:
    """Registered TorchServe models by name.

    Args:
        store: the model store (``--model-store``); None: nothing can be registered by URL.
        cache: where archives are unpacked on this node.
        default_workers: workers of a registration that names none (``default_workers_per_model``).
        job_queue_size: requests waiting per version before more are refused (0: unbounded).
    """

    def __init__(self, store: Path | None, cache: Path, default_workers: int = 1, job_queue_size: int = 0) -> None:
        self.store = store.resolve() if store is not None else None
        self.cache = cache
        self.default_workers = max(1, default_workers)
        self.job_queue_size = job_queue_size
        self.models: dict[str, TsModel] = {}

    def archive(self, url: str) -> Path:
        """The store's archive a registration's ``url`` names: a file name in the store, a path under it,
        or a ``file://`` URL of one.

        Raises:
            InvalidRequest: no url, a remote URL, a path outside the store.
            ModelNotFound: no such archive in the store.
        """
        if not url:
            raise InvalidRequest("Parameter url is required.")
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            raise InvalidRequest(f"url {url!r}: archives are registered from the model store only; copy it "
                                 f"into {self.store or '--model-store'} and register it by file name")
        if self.store is None:
            raise InvalidRequest("no --model-store: nothing can be registered")
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
        path = (path if path.is_absolute() else self.store / path).resolve()
        if self.store not in path.parents:
            raise InvalidRequest(f"url {url!r} is outside the model store {self.store}")
        if not path.is_file():
            raise ModelNotFound(f"Model not found in model store: {url}")
        return path

    def register(self, archive: Path, url: str, name: str | None = None, params: RegisterParams = RegisterParams(),
                 at_startup: bool = False) -> tuple[TsModel, TsVersion]:
        """Unpack ``archive`` as a new version of ``name`` (default: its ``modelName``).

        Raises:
            ConfigError: a bad archive (nothing changes).
            InvalidRequest: a name no model folder can have.
            Conflict: that version of the name is registered already.
        """
        manifest = read_manifest(archive)
        name = name or manifest["modelName"]
        if not MODEL_NAME.match(name):
            raise InvalidRequest(f"model_name {name!r}: names are letters, digits, '_', '.' or '-'")
        model_version = str(manifest.get("modelVersion") or "1")
        current = self.models.get(name)
        if current is not None and any(v.model_version == model_version for v in current.versions):
            raise Conflict(f"Model version {model_version} is already registered for model {name}")
        taken = {v.version for v in current.versions} if current is not None else set()
        number = archive_version(model_version)
        number = number if number not in taken else max(taken) + 1
        unpacked = unpack_mar(archive, self.cache, name, number, write_config=False)
        settings = replace(params.over(unpacked.settings, self.default_workers), job_queue_size=self.job_queue_size)
        added = TsVersion(number, model_version, url, settings, at_startup)
        if current is None:
            model = TsModel(name, unpacked.folder, (added,), number, settings.min_workers, settings.max_workers)
        else:
            model = replace(current, versions=(*current.versions, added))
        self.models[name] = model
        write_model_config(model.folder, name, replace(settings, min_workers=model.workers))
        return model, added

    def get(self, name: str) -> TsModel:
        """Raises ModelNotFound for a name not registered."""
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"Model not found: {name}")
        return model

    def unregister(self, name: str, model_version: str | None = None) -> TsModel | None:
        """Drop one version (None: the default); returns the model, or None once its last version went.

        Raises:
            ModelNotFound: no such model or version.
            InvalidRequest: the default version while other versions are registered.
        """
        model = self.get(name)
        gone = model.find(model_version)
        if gone.version == model.default and len(model.versions) > 1:
            raise InvalidRequest(f"Cannot remove default version {gone.model_version} of model {name}; "
                                 f"set another default first")
        if len(model.versions) == 1:
            del self.models[name]
            return None
        model = replace(model, versions=tuple(v for v in model.versions if v is not gone))
        self.models[name] = model
        return model

    def set_default(self, name: str, model_version: str) -> TsModel:
        """Make ``model_version`` the one unversioned requests reach.

        Raises:
            ModelNotFound: no such model or version.
        """
        model = self.get(name)
        model = replace(model, default=model.find(model_version).version)
        self.models[name] = model
        return model

    def scale(self, name: str, min_workers: int | None, max_workers: int | None) -> TsModel:
        """Set the workers (replicas of each version) of a model.

        Raises:
            ModelNotFound: no such model.
            InvalidRequest: fewer than one worker, or a maximum below the minimum.
        """
        model = self.get(name)
        workers = model.workers if min_workers is None else min_workers
        ceiling = max(workers, model.max_workers) if max_workers is None else max_workers
        if workers < 1:
            raise InvalidRequest(f"min_worker {workers}: at least one worker is needed (infergrid keeps a "
                                 f"replica per version; unregister the version to stop it)")
        if ceiling < workers:
            raise InvalidRequest(f"max_worker {ceiling} is below min_worker {workers}")
        model = replace(model, workers=workers, max_workers=ceiling)
        self.models[name] = model
        return model
