"""The model deployment: replicas that hold one model version and run stacked batches.

The constructor loads the backend and runs real inferences (the config's ``model_warmup`` and TF
Serving's ``assets.extra`` warm-up requests, else one zero-filled row) before the replica reports
healthy, so Serve never routes to a version that cannot answer. Framework calls run on one worker
thread per replica, off the event loop; one batch at a time, since the framework already uses every
core the replica holds.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.errors import BackendLoadError, ServingError
from backends.gpu import TRITON_NAMES, gpu_samples, gpu_uuid
from backends.model_config import TRITON_PLATFORM_NAMES, ModelConfig
from backends.registry import create_backend
from backends.signature import ModelSignature
from backends.warmup import WarmupSample, warmup_samples
from deployments.dataplane.replica_load import ReplicaLoad
from deployments.dataplane.tf_warmup import tf_serving_warmup_samples

__all__ = ["ModelVersion", "VersionInfo", "warmup_inputs"]


@dataclass(frozen=True)
class VersionInfo:
    """What the endpoint needs to know about a loaded version (its batching comes from the routing
    table, which can change while the version runs)."""

    model: str
    version: int
    platform: str
    signature: ModelSignature
    max_batch_size: int
    device: str
    # Triton's Python backend: requests reach ``infer_requests`` whole (a list per batch, one
    # result or error each) instead of stacked into one batch.
    whole_requests: bool = False
    # A SavedModel's other signatures by name (TF Serving's classify and regress), run unbatched.
    other_signatures: dict = field(default_factory=dict)

    @property
    def triton_platform(self) -> str:
        return TRITON_PLATFORM_NAMES.get(self.platform, self.platform)


def warmup_inputs(signature: ModelSignature) -> dict[str, np.ndarray]:
    """One row of zeros per input (variable dimensions set to 1)."""
    from backends.dtypes import v2_to_numpy

    inputs = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            array = np.empty(shape, dtype=object)
            array.fill(b"")
        else:
            array = np.zeros(shape, dtype=v2_to_numpy(spec.datatype))
        inputs[spec.name] = array
    return inputs


def _device() -> str:
    import ray

    return "cuda:0" if ray.get_gpu_ids() else "cpu"


def _replica_rank() -> int:
    """This replica's index among its deployment's replicas (0 where Serve does not say)."""
    from ray import serve

    try:
        rank = serve.get_replica_context().rank
        return int(getattr(rank, "rank", rank) or 0)
    except Exception:  # noqa: BLE001 - outside a replica, or an older Serve
        return 0


class ModelVersion:
    """One (model, version): load, warm, and run batches handed over by the endpoint."""

    def __init__(self, model: str, version: int, version_dir: str, config: ModelConfig, threads: int = 1) -> None:
        device = _device()
        self._backend = create_backend(config, Path(version_dir), device, threads)
        whole_requests = self._backend.handles_requests
        if whole_requests:  # Triton's name of this instance: <group>_<index>
            self._backend.instance_name = f"{model}_0_{_replica_rank()}"
        self._backend.load()
        samples = warmup_samples(config.triton, Path(version_dir).parent) + \
            tf_serving_warmup_samples(Path(version_dir), self._backend.signature)  # TF Serving's assets.extra
        self._warm_up(model, version, samples, whole_requests)
        self._info = VersionInfo(model, version, config.platform, self._backend.signature,
                                 self._backend.max_batch_size, device,
                                 whole_requests, self._backend.other_signatures())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{model}-v{version}")
        self._started = False  # set on the first call, which runs on the replica's event loop
        self._load = ReplicaLoad()  # for Serve's autoscaler (record_autoscaling_stats)

    def _warm_up(self, model: str, version: int, samples: list[WarmupSample], whole_requests: bool) -> None:
        """Run the warm-up samples (``model_warmup``, TF Serving's records), else one zero-filled row
        (a Python model: nothing, as in Triton), before the replica reports healthy; a failure fails
        the load."""
        if not samples and not whole_requests:
            samples = [WarmupSample("zero-filled row", warmup_inputs(self._backend.signature), 1)]
        for sample in samples:
            try:
                for _ in range(sample.count):
                    self._backend.predict(sample.inputs)
            except ServingError as exc:
                raise BackendLoadError(f"{model} version {version}: warm-up {sample.name!r} failed: {exc}") from exc

    def _start(self) -> None:
        """On the first call: GPU samples (GPU replicas) and a Python model's BLS calls, both counted
        by one recorder reported to the metrics hub."""
        self._started = True
        on_gpu, bls = self._info.device != "cpu", self._info.whole_requests
        if not (on_gpu or bls):
            return
        from deployments.observability.hub import replica_recorder

        recorder = replica_recorder(True, self._gpu_sampler() if on_gpu else None)
        if bls:
            from backends.triton_python import utils
            from deployments.dataplane.bls import BlsCalls

            utils.connect_bls(BlsCalls(self._info.model, recorder).submit)

    def _gpu_sampler(self):
        """GPU utilisation, memory and fragmentation, sampled before each report."""
        device = self._info.device
        # The node and the physical GPU Ray gave this replica: the label dashboards show.
        import ray

        gpus = ray.get_gpu_ids()
        label = f"{ray.util.get_node_ip_address()}:gpu{gpus[0] if gpus else device}"

        uuid = gpu_uuid(device)

        def sample(recorder) -> None:
            for name, value in gpu_samples(device).items():
                recorder.set(name, (label,), value)
                if name in TRITON_NAMES:  # also under Triton's name and label
                    recorder.set(TRITON_NAMES[name], (uuid,), value)
        return sample

    async def infer_batch(self, inputs: dict[str, np.ndarray],
                          backlog: tuple[str, int] | None = None) -> dict[str, np.ndarray]:
        """Run one stacked batch (already validated by the endpoint); ``backlog``: the caller's
        (source, rows it has outstanding for this version), for the autoscaler."""
        if not self._started:
            self._start()
        rows = len(next(iter(inputs.values()))) if inputs and self._info.max_batch_size > 0 else 1
        return await self._compute(rows, backlog, self._backend.predict, inputs)

    async def infer_requests(self, requests: list[dict[str, np.ndarray]],
                             backlog: tuple[str, int] | None = None) -> list:
        """Run one batch of whole requests (a Python model's ``execute``): per request its outputs
        or its error (a ``ServingError`` value, so the others of the batch still get their answers)."""
        if not self._started:
            self._start()
        return await self._compute(len(requests), backlog, self._backend.execute_requests, requests)

    async def _compute(self, rows: int, backlog: tuple[str, int] | None, run, argument):
        """``run(argument)`` on the worker thread, counted as ``rows`` held and as time computing."""
        self._load.arrived(rows, backlog)

        def timed():
            self._load.computing()
            return run(argument)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            self._load.done(rows)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metrics hook: rows held and queued upstream, time computing
        (read by ``deployments.control.autoscale_policy``); async, so it runs on the event loop
        that updates the counters."""
        return self._load.stats()

    async def run_signature(self, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run another signature of the model on one request (TF Serving's classify and regress)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._backend.run_signature, name, inputs)

    async def describe(self) -> VersionInfo:
        """Signature and batching settings of this version."""
        return self._info

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.unload()
