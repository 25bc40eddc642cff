"""TensorFlow Serving's REST API (``/v1/models/...``) over the same doors as v2: a transport, not a copy.

Paths (TF Serving's ``api_rest.md``):

* ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]``  model_version_status (a label: its version's)
* ``GET  /v1/models/{m}[/versions/{v}]/metadata``   model_spec + signature_def
* ``POST /v1/models/{m}[/versions/{v}]:predict``    row (``instances``) or columnar (``inputs``)
* ``POST /v1/models/{m}[/versions/{v}]:classify|:regress``  ``examples`` (tf.Example features) of a
  SavedModel's classification or regression signature (``deployments.protocol.tfserving_examples``)

A request reaches the model's ``Door``: the same routing, batching, limits and metrics as a v2
request to that model (a v2 and a TF Serving request can share one batch). Errors are
``{"error": "..."}``; 404 for an unknown model or version, 400 for a bad body (naming the problem).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from backends.errors import MethodNotAllowed, ModelNotFound
from deployments.ingress.http import HttpReply, json_reply
from deployments.protocol.tfserving_examples import (
    EXAMPLES_INPUT,
    check_signature,
    classify_result,
    encode_result_json,
    examples_from_json,
    regress_result,
)
from deployments.protocol.tfserving_rest import (
    DEFAULT_SIGNATURE,
    decode_predict,
    encode_predict,
    model_metadata,
    version_status,
)

if TYPE_CHECKING:
    from deployments.ingress.gateway import Door
    from deployments.ingress.server import ServerApi

__all__ = ["TF_MODELS", "TfServingRest", "run_examples", "tf_model_name", "tf_version_status"]

TF_MODELS = "/v1/models/"
_PATH = re.compile(r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<what>/metadata|:predict|:classify|:regress)?/?$")


def tf_model_name(path: str) -> str | None:
    """The model a ``/v1/models/...`` path names (None: not such a path)."""
    if not path.startswith(TF_MODELS):
        return None
    match = _PATH.match(path[len(TF_MODELS):])
    return match.group("model") if match else path[len(TF_MODELS):].split("/")[0].split(":")[0]


class TfServingRest:
    """Answers TF Serving REST paths for one front-door replica."""

    def __init__(self, server: ServerApi) -> None:
        self._server = server

    async def answer(self, method: str, path: str, body: bytes, door: Door | None) -> HttpReply:
        match = _PATH.match(path[len(TF_MODELS):])
        if match is None:
            raise ModelNotFound(f"no TF Serving route {path} (see /v1/models/{{model}}[/versions/{{v}}]"
                                f"[/metadata|:predict])")
        model, version, label, what = match.group("model", "version", "label", "what")
        if label is not None:  # TF Serving's version labels (--model_config_file): the version it names now
            try:
                version = str(door.version_number(label)) if door is not None and not label.isdigit() else None
            except ModelNotFound:
                version = None
            if version is None:
                raise ModelNotFound(f"Unrecognized servable version label: {label}")
        if not what and method == "GET":  # status: also of a model that failed to load (state END)
            return json_reply(await tf_version_status(self._server, model, version, door))
        if door is None:
            await self._server.not_served(model)
            raise ModelNotFound(f"Servable not found for request: Latest({model})")
        what = what or ""
        if what in (":predict", ":classify", ":regress"):
            if method != "POST":
                raise MethodNotAllowed(f"{what[1:]} takes POST, not {method}")
            if what != ":predict":
                signature_name, examples = examples_from_json(body, door.served.limits)
                _, result = await run_examples(door, what[1:], signature_name, examples, version)
                return HttpReply(200, encode_result_json(result))
            return await self._predict(door, version, body)
        if method != "GET":
            raise MethodNotAllowed(f"{path} takes GET, not {method}")
        described = await door.describe(version)
        return json_reply(model_metadata(model, version or described.versions[0], described.signature,
                                         described.other_signatures))

    async def _predict(self, door: Door, version: str | None, body: bytes) -> HttpReply:
        described = await door.describe(version)
        request = decode_predict(body, described.signature, door.served.limits)
        number = int(version) if version else None
        answered, outputs = await door.infer_versioned(request.inputs, number, None)
        return HttpReply(200, encode_predict(request, outputs, [s.name for s in described.signature.outputs]))


async def run_examples(door: Door, kind: str, signature_name: str, examples: np.ndarray,
                       version: str | None) -> tuple[int, list]:
    """Classify or regress (``kind``) serialized ``tf.Example`` s: (the version that answered, the result).

    The served signature (``serving_default``) runs through the data plane like a predict (batched);
    another signature of the SavedModel runs as one call to a replica of the version.

    Raises:
        InvalidRequest: no such signature, or one that is not of ``kind``.
    """
    if signature_name == DEFAULT_SIGNATURE:
        check_signature(kind, signature_name, (await door.describe(version)).signature)
        answered, outputs = await door.infer_versioned({EXAMPLES_INPUT: examples}, version, None)
    else:
        route, signature = await door.other_signature(signature_name, version)
        check_signature(kind, signature_name, signature)
        answered, outputs = route.version, await route.run_signature(signature_name, {EXAMPLES_INPUT: examples})
    if kind == "classify":
        return answered, classify_result(outputs, len(examples))
    return answered, regress_result(outputs, len(examples))


async def tf_version_status(server: ServerApi, model: str, version: str | None, door: Door | None) -> dict:
    """``model_version_status`` of ``model`` (``version``: that one only), also of a version that failed
    to load (state END); an ensemble or pipeline reports its own version.

    Raises:
        ModelNotFound: no such model or version, in TF Serving's words.
    """
    rows = [(r.version, r.state, r.reason) for r in await server.repository_index()
            if r.name == model and (version is None or r.version == version)]
    rows = [(r[0] or "1", *r[1:]) for r in rows if r[0] is not None or r[1] != "READY"]
    if not rows and version is None and door is not None:
        rows = [(v, "READY", "") for v in (await door.describe(None)).versions]
    if not rows:
        raise ModelNotFound(f"Could not find version {version} of model {model}" if version
                            else f"Could not find any versions of model {model}")
    return version_status(rows)
