"""A TorchServe handler in a replica: an unpacked ``.mar`` loaded with TorchServe's own ``ts`` package.

``ts.model_loader.TsModelLoader`` imports the handler (a file of the archive, ``file:function``, or a
built-in name such as ``image_classifier``) and calls its ``initialize(context)`` with TorchServe's
``Context``; each batch the dynamic batcher gathered then goes to the handler's entry point as the
list TorchServe's worker builds (``ts.service.Service.retrieve_data_for_inference``), with the
request ids and headers set on the context. What TorchServe's frontend would answer is kept: per
request the returned value (encoded as TorchServe's worker encodes it), the content type and the
status the handler set; a failure of the whole batch fails each request with TorchServe's status
(``PredictionException``'s code, 507 out of memory, 503 otherwise).

Trust model as TorchServe's: an archive's code runs inside the replica once the operator has put it in
the model store (or registered it); nothing in it is installed (``requirements.txt`` unmet: the load
fails naming what it asked for).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend
from backends.errors import BackendLoadError, HandlerError, ServingError
from backends.signature import ModelSignature, TensorSpec
from backends.torchserve.wire import TS_CONTENT_TYPE, TS_INPUT, TS_OUTPUT, is_explanation, worker_request

__all__ = ["TorchServeBackend", "unmet_requirements"]

logger = logging.getLogger("infergrid")

MANIFEST = "MAR-INF/MANIFEST.json"


def unmet_requirements(requirements_file: Path) -> list[str]:
    """The lines of a ``requirements.txt`` this environment does not satisfy (installed nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    unmet = []
    for line in requirements_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                unmet.append(line)
        except (InvalidRequirement, PackageNotFoundError):
            unmet.append(line)
    return unmet


def _encoded(value: Any) -> bytes:
    """A handler's answer as TorchServe's worker encodes it: bytes as they are, str as UTF-8, a tensor
    by ``torch.save``, anything else as indented JSON."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    import torch

    if isinstance(value, torch.Tensor):
        import io

        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue()
    return json.dumps(value, indent=2).encode("utf-8")


class TorchServeBackend(Backend):
    """One version of a TorchServe model (an unpacked ``.mar``) in one replica: one TorchServe worker."""

    default_filenames = (MANIFEST,)
    handles_requests = True

    def __init__(self, config, version_dir: Path, device: str = "cpu", threads: int = 1) -> None:
        super().__init__(config, version_dir, device, threads)
        self._service: Any = None
        self.manifest: dict = {}

    def load(self) -> None:
        path = self.model_path
        try:
            self.manifest = json.loads(path.read_text())
            handler = self.manifest["model"]["handler"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendLoadError(f"{self.config.name}: {path}: no handler in the manifest ({exc})") from exc
        requirements = self.manifest["model"].get("requirementsFile")
        if requirements:
            unmet = unmet_requirements(self.version_dir / requirements)
            if unmet:
                raise BackendLoadError(f"{self.config.name}: {requirements} asks for {', '.join(unmet)}, not "
                                       f"installed here (infergrid installs nothing an archive asks for)")
        self._service = self._load_service(handler)
        self._signature = self._signature or ModelSignature(
            (TensorSpec(TS_INPUT, "BYTES", (-1, 1)),),
            (TensorSpec(TS_OUTPUT, "BYTES", (-1, 1)), TensorSpec(TS_CONTENT_TYPE, "BYTES", (-1, 1))))

    def _load_service(self, handler: str) -> Any:
        import torch
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
        from ts.model_loader import TsModelLoader

        torch.set_num_threads(self.threads)
        folder = str(self.version_dir.resolve())
        if folder not in sys.path:  # as TorchServe's worker: the archive's modules import each other
            sys.path.insert(0, folder)
        import ts

        metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
        metrics.initialize_cache()
        metrics.model_name = self.config.name
        gpu_id = int(self.device.partition(":")[2] or 0) if self.device.startswith("cuda") else None
        try:
            return TsModelLoader().load(self.config.name, folder, handler, gpu_id, max(1, self.max_batch_size),
                                        None, True, metrics)
        except Exception as exc:  # noqa: BLE001 - the archive's own code: any error fails the load
            raise BackendLoadError(f"{self.config.name}: handler {handler!r} failed to load: "
                                   f"{type(exc).__name__}: {exc}") from exc

    def execute_requests(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | ServingError]:
        """Run the handler on one batch: per request its answer (``output``, ``content_type``) or its error.

        ``BaseHandler`` explains a whole batch when its first request asks (``explain: True``), so
        explanations and predictions gathered together run as two calls of the handler."""
        explain = [is_explanation(request[TS_INPUT].ravel()[0]) for request in batch]
        if not any(explain) or all(explain):
            return self._execute(batch)
        answers: list = [None] * len(batch)
        for wanted in (False, True):
            chosen = [index for index, flag in enumerate(explain) if flag == wanted]
            for index, answer in zip(chosen, self._execute([batch[i] for i in chosen])):
                answers[index] = answer
        return answers

    def _execute(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | ServingError]:
        from ts.service import Service
        from ts.utils.util import PredictionException

        requests = [worker_request(request[TS_INPUT].ravel()[0], uuid.uuid4().hex) for request in batch]
        headers, input_batch, request_ids = Service.retrieve_data_for_inference(requests)
        context = self._service.context
        context.request_ids = request_ids
        context.request_processor = headers
        context.metrics.request_ids = request_ids
        try:
            answers = self._service._entry_point(input_batch, context)
        except MemoryError:
            return [HandlerError(f"model {self.config.name!r}: out of resources", 507)] * len(batch)
        except PredictionException as exc:
            return [HandlerError(exc.message, exc.error_code)] * len(batch)
        except Exception as exc:  # noqa: BLE001 - the handler's error fails the batch, as in TorchServe
            logger.warning("model %s: handler failed: %s: %s", self.config.name, type(exc).__name__, exc)
            status = 507 if "CUDA" in str(exc) else 503
            return [HandlerError(f"model {self.config.name!r}: prediction failed: {type(exc).__name__}: {exc}",
                                 status)] * len(batch)
        if not isinstance(answers, list) or len(answers) != len(batch):
            got = len(answers) if isinstance(answers, list) else type(answers).__name__
            return [HandlerError(f"model {self.config.name!r}: the handler returned {got} answers for "
                                 f"{len(batch)} requests (a list of one per request)", 503)] * len(batch)
        return [self._answer(context, index, value) for index, value in enumerate(answers)]

    def _answer(self, context: Any, index: int, value: Any) -> dict[str, np.ndarray] | ServingError:
        try:
            body = _encoded(value)
        except TypeError as exc:
            return HandlerError(f"model {self.config.name!r}: answer {index} cannot be encoded: {exc}", 503)
        content_type = context.get_response_content_type(index) or ""
        status, phrase = context.get_response_status(index)
        if status is not None and int(status) >= 400:
            return HandlerError(phrase or body.decode("utf-8", "replace")[:200] or f"status {status}", int(status),
                                body, content_type)
        return {TS_OUTPUT: np.array([[body]], dtype=object),
                TS_CONTENT_TYPE: np.array([[content_type.encode()]], dtype=object)}

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request alone (a warm-up): its error raised."""
        result = self.execute_requests([dict(inputs)])[0]
        if isinstance(result, ServingError):
            raise result
        return result
