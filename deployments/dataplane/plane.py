"""The data plane: what every transport calls, whatever protocol it speaks.

A transport (v2 over HTTP today) is a codec plus thin glue: it turns wire bytes into named numpy
tensors and calls, in order, ``authorise`` (before it reads the body), ``check_declared_size``,
its own decoder with ``limits``, then ``infer``; it encodes what comes back. Routing to a version,
batching, the call to the version's replicas, request timeouts and metrics all sit behind
``infer``, in the ``Servable`` the plane was built over (``ModelRouter`` for a model,
``CompositeModel`` for an ensemble or pipeline). So adding a protocol touches none of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from backends.errors import ModelNotFound
from backends.signature import ModelSignature
from deployments.dataplane.auth import AuthPolicy, GroupOf
from deployments.dataplane.policy_route import PolicyRoute, ReportGuard
from deployments.observability.hub import hub_handle
from deployments.observability.metrics import Recorder, triton_statistics
from deployments.protocol.limits import RequestLimits, check_body_size
from deployments.protocol.triton_config import effective_config
from deployments.repository.traffic import TrafficPolicy

__all__ = ["DataPlane", "Servable", "ModelDescription", "InferOutcome", "served_versions"]


@dataclass(frozen=True)
class ModelDescription:
    """What a model is, for any protocol's metadata call."""

    name: str
    versions: tuple[str, ...]
    platform: str  # Triton's spelling (onnxruntime_onnx, pytorch_libtorch, ...)
    signature: ModelSignature
    max_batch_size: int = 0
    device: str = "cpu"  # where the answering version's replicas run ("cuda:0": a GPU)
    other_signatures: dict = field(default_factory=dict)  # a SavedModel's others (classify, regress) by name


@dataclass(frozen=True)
class InferOutcome:
    """The answer to one request: the version that answered and its outputs by name."""

    version: int
    outputs: dict[str, np.ndarray]


async def served_versions(describe: Callable[[None], Awaitable[ModelDescription]]) -> tuple[str, ...]:
    """The versions a model serves now, by its ``describe`` (none when it serves nothing): as in
    Triton, statistics list each of them, with zeros before its first request."""
    try:
        return (await describe(None)).versions
    except Exception:  # noqa: BLE001 - not serving now: statistics show only what was counted
        return ()


class Servable(Protocol):
    """One model as the data plane reaches it: its versions behind a router, or a composite."""

    async def infer(self, inputs: dict[str, np.ndarray], version: str | int | None = None,
                    timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """(version that answered, outputs); validation, routing, batching and timeout inside."""

    async def describe_model(self, version: int | None = None) -> ModelDescription:
        """Name, versions, platform and signature (of ``version``, or the one unversioned calls reach)."""

    async def ready(self, version: int | None = None) -> bool:
        """True when the model (or the version) can serve."""

    def stats(self) -> dict:
        """This replica's own batch counters."""

    def default_version(self) -> str:
        """The version an unversioned request reaches ("" when none), for counting early failures."""


class DataPlane:
    """The protocol-neutral steps of answering for one model in one replica.

    Args:
        model: the model's name (errors and metrics name it).
        servable: where requests go after the checks.
        limits: request size limits, for the transport's decoder and the declared-size check.
        auth: the API-key policy.
        recorder: where refused requests are counted (None: not counted).
        triton_config: the model's config as parsed (``ModelConfig.triton``), completed from the
            model for ``model_config``; replaced in place when the config changes without a reload.
        labels: class labels per output (``label_filename``), for outputs asked for with ``classification``.
    """

    def __init__(self, model: str, servable: Servable, limits: RequestLimits | None = None,
                 auth: AuthPolicy | None = None, recorder: Recorder | None = None,
                 triton_config: Mapping | None = None, labels: Mapping | None = None,
                 version_labels: Mapping[str, int] | None = None) -> None:
        self.model = model
        self.servable = servable
        self.limits = limits or RequestLimits()
        self.triton_config: Mapping = triton_config or {}
        self.labels: Mapping = labels or {}  # output -> class labels, for Triton's classification
        self.version_labels: Mapping[str, int] = version_labels or {}  # TF Serving's: "stable" -> 3
        self._policy = PolicyRoute(model, lambda inputs, version, timeout_s: self.servable.infer(inputs, version, timeout_s),
                                   getattr(servable, "infer_split", None), recorder)
        self._auth = auth or AuthPolicy()
        self._recorder = recorder

    def authorise(self, group: GroupOf, authorization: str | None, what: str) -> None:
        """Raise ``Unauthenticated`` / ``Forbidden`` unless the caller may run an operation of ``group``
        (a group name, or how to find it: asked only when API keys are set)."""
        self._auth.authorise(group, authorization, what)

    def check_declared_size(self, size_bytes: int) -> None:
        """Refuse a body by its declared size before it is read (``PayloadTooLarge``)."""
        check_body_size(size_bytes, self.limits)

    @property
    def traffic(self) -> TrafficPolicy | None:
        """The model's traffic policy (weights over its versions, for unversioned requests), or None."""
        return self._policy.policy

    def set_traffic(self, policy: Mapping) -> None:
        """Take the model's traffic policy (``TrafficPolicy.to_dict()``; empty: none) from its served entry."""
        self._policy.set(policy)

    def report_guard(self, report: ReportGuard) -> None:
        """Where a guard's trip or step goes: the controller, which writes it into ``traffic.json``."""
        self._policy.report = report

    def version(self, version: str | int | None) -> str | int | None:
        """The version a request names: a number, or a version label (``stable``) turned into the
        version it points at now; every protocol's version field goes through here.

        Unversioned: the version the label ``""`` names, where one does (TorchServe's default version,
        ``deployments.repository.ts_registry``), else None (the newest version ready).

        Raises:
            ModelNotFound: neither a version number nor one of the model's labels.
        """
        if version is None or version == "":
            default = self.version_labels.get("")
            return str(default) if default else version
        if isinstance(version, int) or version.isdigit():
            return version
        if version in self.version_labels:
            return str(self.version_labels[version])
        raise ModelNotFound(f"model {self.model!r} has no version or version label {version!r}")

    def refused(self, version: str | None) -> None:
        """Count a request that failed before it reached a version (malformed, too large)."""
        if self._recorder is not None:
            self._recorder.failure(self.model, str(version or self.servable.default_version()), "OTHER", 0.0)

    async def infer(self, inputs: dict[str, np.ndarray], version: str | int | None = None,
                    timeout_s: float | None = None) -> InferOutcome:
        """Route to a version, batch, call its replicas; ``timeout_s`` bounds the wait (504 past it).

        An unversioned request of a model with a traffic policy goes where the policy sends it
        (``deployments.dataplane.policy_route``); metadata calls never split: they use ``version()``."""
        if version in (None, "") and self._policy.policy is not None:
            return InferOutcome(*await self._policy.infer(inputs, timeout_s))
        return InferOutcome(*await self.servable.infer(inputs, self.version(version), timeout_s))

    async def describe(self, version: int | None = None) -> ModelDescription:
        """The model's (or the version's) description for a metadata call."""
        return await self.servable.describe_model(self.version(version))  # type: ignore[arg-type]

    async def ready(self, version: int | None = None) -> bool:
        """True when the model (or the version) can serve."""
        return await self.servable.ready(self.version(version))  # type: ignore[arg-type]

    async def model_config(self, version: int | None = None) -> dict:
        """The config as Triton reports it (model-configuration extension), completed from the
        version that ``version`` reaches: Triton's JSON mapping with the proto's field names."""
        described = await self.servable.describe_model(self.version(version))  # type: ignore[arg-type]
        return effective_config(self.triton_config, described.name, described.platform, described.signature,
                                described.max_batch_size, described.device)

    async def statistics(self, version: str | None = None) -> dict:
        """Triton's statistics extension for this model, for the whole cluster (from the metrics hub)."""
        merged = await hub_handle().collect.remote()
        served = await served_versions(self.servable.describe_model)
        return triton_statistics(merged, self.model, self.version(version), served)  # type: ignore[arg-type]
