"""The one registry that carries pullguard errors across gRPC trailers, both ways."""

from __future__ import annotations

import pytest

from pullguard.services.runtime.errors import (
    ERROR_CLASS_KEY,
    ERROR_HTTP_KEY,
    ERROR_OCI_KEY,
    WIRE_ERRORS,
    LayerUnavailable,
    NotFound,
    PullguardError,
    StagingFull,
    UpstreamError,
    UpstreamTimeout,
    error_class_of,
    error_from_trailers,
    error_trailers,
)


@pytest.mark.parametrize(
    "error",
    [
        UpstreamError("upstream: 502 from lab"),
        UpstreamTimeout("upstream: no answer"),
        StagingFull(),
        NotFound("no such blob", "BLOB_UNKNOWN"),
    ],
)
def test_a_wire_error_comes_back_as_itself(error: PullguardError) -> None:
    rebuilt = error_from_trailers(error_trailers(error), error.message)
    assert rebuilt is not None
    assert (type(rebuilt), rebuilt.message, rebuilt.http_status, rebuilt.oci_code) == (
        type(error),
        error.message,
        error.http_status,
        error.oci_code,
    )


def test_an_upstream_status_survives_the_trip() -> None:
    error = UpstreamError("upstream: 503")
    error.http_status = 503
    rebuilt = error_from_trailers(error_trailers(error), error.message)
    assert rebuilt is not None and rebuilt.http_status == 503


def test_other_classes_are_not_rebuilt() -> None:
    error = LayerUnavailable("format", "format: down")
    assert "LayerUnavailable" not in WIRE_ERRORS
    assert error_from_trailers(error_trailers(error), error.message) is None
    assert error_class_of(error_trailers(error)) == "LayerUnavailable"
    assert error_class_of(()) == ""


def test_malformed_mapping_keeps_the_class_defaults() -> None:
    trailing = ((ERROR_CLASS_KEY, "NotFound"), (ERROR_HTTP_KEY, "200"), (ERROR_OCI_KEY, "<x>"))
    rebuilt = error_from_trailers(trailing, "gone")
    assert rebuilt is not None
    assert (rebuilt.http_status, rebuilt.oci_code) == (404, "MANIFEST_UNKNOWN")
