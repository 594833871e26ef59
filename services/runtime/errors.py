"""pullguard's one error hierarchy, and the one table that maps it.

::

    PullguardError                  (INTERNAL, 500, UNKNOWN)
     ├── ConfigError                (FAILED_PRECONDITION)  a configuration file is wrong
     ├── InvalidRequest             (INVALID_ARGUMENT, 400, NAME_INVALID ...)  unparseable request
     ├── NotFound                   (NOT_FOUND, 404, MANIFEST_UNKNOWN / BLOB_UNKNOWN)
     ├── UpstreamError              (UNAVAILABLE, 502/503/504, UNAVAILABLE)  upstream failed; retry
     │    └── UpstreamTimeout       (DEADLINE_EXCEEDED, 504)
     ├── TargetError                (UNAVAILABLE, 503, UNAVAILABLE)  target registry failed; retry
     ├── StagingError               (INTERNAL)  staged content missing or unreadable
     │    └── StagingFull           (UNAVAILABLE, 503)  no space left to stage; retry
     └── LayerUnavailable           (UNAVAILABLE)  a security layer could not run

Each class declares its gRPC status code, OCI error code and HTTP status, so
that one server interceptor and one front-door handler map every error the
same way. A verdict (ALLOW/DENY) is never an error: see ``findings``.
"""

from __future__ import annotations

import grpc


class PullguardError(Exception):
    """Base of every error pullguard raises on purpose."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    oci_code: str = "UNKNOWN"
    http_status: int = 500

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


class NotFound(PullguardError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    oci_code = "MANIFEST_UNKNOWN"
    http_status = 404

    def __init__(self, message: str, oci_code: str = "MANIFEST_UNKNOWN") -> None:
        super().__init__(message)
        self.oci_code = oci_code


class UpstreamError(PullguardError):
    """The upstream registry failed in a way that may pass: retry later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 502


class UpstreamTimeout(UpstreamError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class TargetError(PullguardError):
    """The registry admitted images are published to refused them or could not be reached.

    The image passed every check, but it is not in the target: the pull is
    refused as retryable, never reported as published.
    """

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 503


class StagingError(PullguardError):
    grpc_code = grpc.StatusCode.INTERNAL


class StagingFull(StagingError):
    """The staging filesystem is full: an outage, never a verdict; retry later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "UNAVAILABLE"
    http_status = 503

    def __init__(self, message: str = "staging: no space left") -> None:
        super().__init__(message)


class LayerUnavailable(PullguardError):
    """A security layer could not give a verdict; the pull is refused."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    oci_code = "DENIED"
    http_status = 403


#: gRPC status codes that carry an upstream failure from the fetcher; the
#: gateway turns them back into UpstreamError rather than a denial.
UPSTREAM_STATUS_PREFIX = "upstream: "
