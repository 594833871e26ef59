"""pullguard's one error hierarchy, and the one table that maps it.

::

    PullguardError                  (INTERNAL, 500, UNKNOWN)
     ├── ConfigError                (FAILED_PRECONDITION)  a configuration file is wrong
     ├── InvalidRequest             (INVALID_ARGUMENT, 400, NAME_INVALID ...)  unparseable request
     ├── Unsupported                (UNIMPLEMENTED, 405, UNSUPPORTED)  not a pull (GET/HEAD)
     ├── Denied                     (PERMISSION_DENIED, 403, DENIED)  refused by a layer's verdict
     ├── Unauthenticated            (UNAUTHENTICATED, 401, UNAUTHORIZED)  no or wrong login/token
     ├── NotPermitted               (PERMISSION_DENIED, 403, DENIED)  the role may not do this
     ├── NotFound                   (NOT_FOUND, 404, MANIFEST_UNKNOWN / BLOB_UNKNOWN ...)
     ├── UpstreamError              (UNAVAILABLE, 502/503/504, UNAVAILABLE)  upstream failed; retry
     │    └── UpstreamUnreachable   (UNAVAILABLE)  down: connections refused, 5xx, after retries
     │         └── UpstreamTimeout  (DEADLINE_EXCEEDED, 504)
     ├── TargetError                (UNAVAILABLE, 503, UNAVAILABLE)  target registry failed; retry
     ├── StagingError               (INTERNAL)  staged content missing or unreadable
     │    └── StagingFull           (UNAVAILABLE, 503)  no space left to stage; retry
     ├── BlobUnreadable             (UNAVAILABLE, 503, UNAVAILABLE)  admitted blob unreadable now
     └── LayerUnavailable           (UNAVAILABLE, 503, UNAVAILABLE)  a security layer could not run
          └── NotServing            a layer cannot work now (its readiness check fails)

Each class declares its gRPC status code, OCI error code and HTTP status, so
that one server interceptor (``server``) and one front-door handler
(``gateway.frontdoor``) map every error the same way; an instance may narrow
its OCI code or HTTP status (``NotFound(..., "BLOB_UNKNOWN")``). A verdict
(ALLOW/DENY) is never an error: see ``findings``.

Across gRPC, :func:`error_trailers` writes an error's class and mapping into
the trailing metadata and :func:`error_from_trailers` rebuilds the classes in
:data:`WIRE_ERRORS` from it: one registry for both directions.

An *outage* (:attr:`PullguardError.outage` set) is an error that says nothing
about the image: a layer down, hung, crashing or not ready, an upstream that
cannot be reached or has no such content, a target that refused. It is
recorded as an outage, never as a verdict, never cached and never
quarantined; the client is told to retry (``retry_after``, in seconds, when
set, becomes a ``Retry-After`` header).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import grpc


class PullguardError(Exception):
    """Base of every error pullguard raises on purpose."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    oci_code: str = "UNKNOWN"
    http_status: int = 500
    #: Set on outages: what kind ("layer_unavailable", "upstream_unreachable", ...).
    outage: str = ""
    #: Seconds a client should wait before it retries; 0 for no Retry-After header.
    retry_after: int = 0

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(PullguardError):
    """A configuration file is wrong. Names the file, the key and the problem."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem


class InvalidRequest(PullguardError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    oci_code = "NAME_INVALID"
    http_status = 400

    def __init__(self, message: str, oci_code: str = "NAME_INVALID") -> None:
        super().__init__(message)
        self.oci_code = oci_code


class Unsupported(PullguardError):
    """A request that is not a pull: pullguard serves GET and HEAD only."""

    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    oci_code = "UNSUPPORTED"
    http_status = 405


class Denied(PullguardError):
    """A layer refused the request (a verdict, not an outage): 403 DENIED.

    A refusal by syntax alone is answered with the distribution spec's status
    and code instead (``gateway.syntax``), hence ``http_status``/``oci_code``.
    """

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    oci_code = "DENIED"
    http_status = 403

    def __init__(self, message: str, http_status: int = 403, oci_code: str = "DENIED") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.oci_code = oci_code


class Unauthenticated(PullguardError):
    """No credentials, or credentials that match no user or token (never says which)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    oci_code = "UNAUTHORIZED"
    http_status = 401


class NotPermitted(PullguardError):
    """Authenticated, but the caller's role does not allow the action."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    oci_code = "DENIED"
    http_status = 403


class NotFound(PullguardError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    oci_code = "MANIFEST_UNKNOWN"
    http_status = 404
    outage = "not_found"

    def __init__(self, message: str, oci_code: str = "MANIFEST_UNKNOWN") -> None:
        super().__init__(message)
        self.oci_code = oci_code


class UpstreamError(PullguardError):
    """The upstream registry failed in a way that may pass: retry later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 502
    outage = "upstream_error"
    retry_after = 10


class UpstreamUnreachable(UpstreamError):
    """No answer worth having: refused or broken connections, 5xx, 429, after every retry.

    Unlike a 401/403 or a TLS failure, this says the upstream is down, so a
    tag's last admitted digest may be served meanwhile (``offline_tags``).
    """

    outage = "upstream_unreachable"


class UpstreamTimeout(UpstreamUnreachable):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    outage = "upstream_timeout"


class TargetError(PullguardError):
    """The registry admitted images are published to refused them or could not be reached.

    The image passed every check, but it is not in the target: the pull is
    refused as retryable, never reported as published.
    """

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 503
    outage = "target_unavailable"
    retry_after = 10


class StagingError(PullguardError):
    grpc_code = grpc.StatusCode.INTERNAL


class StagingFull(StagingError):
    """The staging filesystem is full: an outage, never a verdict; retry later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 503
    outage = "staging_full"
    retry_after = 5

    def __init__(self, message: str = "staging: no space left") -> None:
        super().__init__(message)


class BlobUnreadable(PullguardError):
    """An admitted blob that cannot be opened now (no descriptor left, gone): retry.

    The message says so; no Retry-After is sent (``retry_after`` 0).
    """

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 503


class LayerUnavailable(PullguardError):
    """A security layer gave no verdict: down, hung, crashing or not ready.

    Fail closed, but not a denial: nothing is admitted or served that was not
    admitted already, and the client is told to retry (503).
    """

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 503
    outage = "layer_unavailable"
    retry_after = 5

    def __init__(self, layer: str, message: str, outage: str = "layer_unavailable") -> None:
        super().__init__(message)
        self.layer = layer
        self.outage = outage


class NotServing(LayerUnavailable):
    """A layer refuses a call while its readiness check fails (see ``server``)."""

    def __init__(self, message: str) -> None:
        super().__init__("", message, "layer_not_serving")


#: gRPC status codes that carry an upstream failure from the fetcher; the
#: gateway turns them back into UpstreamError rather than a denial.
UPSTREAM_STATUS_PREFIX = "upstream: "

ERROR_CLASS_KEY = "pullguard-error-class"
ERROR_HTTP_KEY = "pullguard-http-status"
ERROR_OCI_KEY = "pullguard-oci-code"
_OCI_CODE_RE = re.compile(r"[A-Z][A-Z_]{0,63}")

#: Errors rebuilt as themselves from a layer's trailers (the fetcher's upstream
#: and staging failures); any other class a layer raises means "no verdict".
WIRE_ERRORS: dict[str, type[PullguardError]] = {
    cls.__name__: cls
    for cls in (UpstreamError, UpstreamUnreachable, UpstreamTimeout, StagingFull, NotFound)
}


def error_trailers(exc: PullguardError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that lets a caller rebuild the error's class and mapping."""
    return (
        (ERROR_CLASS_KEY, type(exc).__name__),
        (ERROR_HTTP_KEY, str(exc.http_status)),
        (ERROR_OCI_KEY, exc.oci_code),
    )


def error_class_of(trailing: Iterable[tuple[str, str | bytes]]) -> str:
    """The pullguard error class named in trailing metadata, or "" when none is."""
    value = dict(trailing).get(ERROR_CLASS_KEY, "")
    return value if isinstance(value, str) else ""


def error_from_trailers(
    trailing: Iterable[tuple[str, str | bytes]], message: str
) -> PullguardError | None:
    """The error of a :data:`WIRE_ERRORS` class the trailers name, with its mapping; else None."""
    values = dict(trailing)
    error_class = WIRE_ERRORS.get(str(values.get(ERROR_CLASS_KEY, "")))
    if error_class is None:
        return None
    error = error_class(message)
    status = values.get(ERROR_HTTP_KEY, "")
    if isinstance(status, str) and status.isdigit() and 400 <= int(status) <= 599:
        error.http_status = int(status)
    oci_code = values.get(ERROR_OCI_KEY, "")
    if isinstance(oci_code, str) and _OCI_CODE_RE.fullmatch(oci_code):
        error.oci_code = oci_code
    return error
