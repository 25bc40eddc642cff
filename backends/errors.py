"""One error hierarchy for the whole server, each class carrying its HTTP status.

Errors cross Ray processes (replica -> front -> ingress), so every constructor passes all of its
arguments to ``super().__init__``: that keeps them picklable with their message intact. The ingress
renders any ``ServingError`` as ``{"error": str(exc)}`` with ``http_status``, in one place.
"""

from __future__ import annotations

__all__ = [
    "ServingError",
    "InvalidRequest",
    "InputMismatch",
    "ModelNotFound",
    "ModelNotReady",
    "ConfigError",
    "RepositoryError",
    "BackendLoadError",
    "BackendUnavailable",
    "InferenceFailed",
    "StepFailed",
    "PayloadTooLarge",
    "Overloaded",
    "RequestTimeout",
    "Unauthenticated",
    "Forbidden",
    "MethodNotAllowed",
    "Conflict",
    "ReplicaLost",
    "HandlerError",
    "unwrap_error",
    "status_of",
]


class ServingError(Exception):
    """Root of every error the server reports to a client."""

    http_status: int = 500
    retry_after_s: int | None = None  # set: the answer carries Retry-After (a retry will be served)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def response_headers(self) -> dict[str, str] | None:
        """Headers the HTTP answer carries besides the JSON error (Retry-After, WWW-Authenticate)."""
        return None if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


class InvalidRequest(ServingError):
    """The request body is malformed: not JSON, a missing field, a wrong type."""

    http_status = 400


class InputMismatch(InvalidRequest):
    """An input does not match the model's signature (name, shape or datatype)."""


class ModelNotFound(ServingError):
    """No such model, or no such version of it."""

    http_status = 404


class ModelNotReady(ServingError):
    """The model exists but cannot serve now (loading, or failed to load)."""

    http_status = 503


class ConfigError(ServingError):
    """A config.pbtxt (or a model folder) is invalid; the message names the file and field."""

    http_status = 400


class RepositoryError(ServingError):
    """A repository request that cannot be carried out (load, unload, control mode)."""

    http_status = 400


class BackendLoadError(ServingError):
    """A framework failed to load a model version."""

    http_status = 500


class BackendUnavailable(BackendLoadError):
    """The framework a model needs is not installed; the message says what to install."""


class InferenceFailed(ServingError):
    """The framework raised while running a batch; the message names the model."""

    http_status = 500


class HandlerError(InferenceFailed):
    """A TorchServe handler failed a request (``PredictionException``, ``set_response_status``), with the
    status it gave. ``body``: what the handler returned for it (TorchServe's inference API sends that
    with the status; None: the whole batch failed, answered with TorchServe's error JSON)."""

    def __init__(self, message: str, http_status: int = 500, body: bytes | None = None,
                 content_type: str = "") -> None:
        super().__init__(message)
        self.args = (message, http_status, body, content_type)
        self.http_status = http_status
        self.body = body
        self.content_type = content_type


class StepFailed(ServingError):
    """A step of an ensemble or pipeline failed; the message names the step and its member model.

    The status follows the member's failure: 503 while a member cannot serve, 500 otherwise (a
    member refusing the tensors the ensemble handed it is a wiring fault, not the client's).
    """

    def __init__(self, message: str, http_status: int = 500) -> None:
        super().__init__(message)
        self.args = (message, http_status)
        self.http_status = http_status

    @classmethod
    def of_member(cls, composite: str, step: str, exc: BaseException) -> StepFailed:
        """The step's error for whatever its member raised (a Ray wrapper is unwrapped first)."""
        cause = unwrap_error(exc)
        # Not served (or not that version): the member cannot answer now; anything else is a fault.
        status = 503 if isinstance(cause, (ModelNotReady, ModelNotFound, Overloaded)) else 500
        text = str(cause) if isinstance(cause, ServingError) else f"{type(cause).__name__}: {cause}"
        return cls(f"{composite!r} {step} failed: {text}", status)


class PayloadTooLarge(ServingError):
    """A request over a size limit (body bytes, tensor elements); the message names the limit."""

    http_status = 413


class Overloaded(ServingError):
    """A model's queue is full: answered at once with 503 and ``Retry-After`` instead of queueing."""

    http_status = 503
    retry_after_s = 1


class ReplicaLost(ServingError):
    """The replica running a request died (killed, out of memory, its node gone): 503 with
    ``Retry-After``, since Serve is already starting a replacement and a retry will be served."""

    http_status = 503
    retry_after_s = Overloaded.retry_after_s


class RequestTimeout(ServingError):
    """A request not answered within its timeout (the model's default or the request's own)."""

    http_status = 504


class Unauthenticated(ServingError):
    """No API key, or one the server does not know (401; the message never repeats the key)."""

    http_status = 401

    def response_headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": 'Bearer realm="infergrid"'}


class Forbidden(ServingError):
    """A known API key whose role does not allow this endpoint (403)."""

    http_status = 403


class MethodNotAllowed(ServingError):
    """An HTTP method the path does not take (405); the message says which to use."""

    http_status = 405


class Conflict(ServingError):
    """What the request would create exists already (409): a TorchServe model version registered twice."""

    http_status = 409


def unwrap_error(exc: BaseException) -> BaseException:
    """The original exception behind a Ray task error (which wraps errors raised in replicas).

    Duck-typed on the wrapper's ``cause`` attribute, so this module needs no Ray.
    """
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def status_of(exc: BaseException) -> int:
    """The HTTP status a failure is answered with: the one place that decides it.

    A ``ServingError`` (also one wrapped by Ray on its way from a replica) keeps its own status;
    anything else is an internal error (500).
    """
    cause = unwrap_error(exc)
    return cause.http_status if isinstance(cause, ServingError) else 500
