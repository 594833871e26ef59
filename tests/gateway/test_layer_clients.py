"""How the gateway classifies a layer call that gave no verdict (clients._translate)."""

from __future__ import annotations

import grpc
import pytest

from pullguard.gateway.clients import _translate
from pullguard.services.runtime.errors import (
    LayerUnavailable,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)


def _error(code: grpc.StatusCode, details: str, error_class: str = "") -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("pullguard-error-class", error_class)) if error_class else None
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "error_class", "kind"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", "layer_timeout"),
        (grpc.StatusCode.UNAVAILABLE, "", "layer_unavailable"),
        (grpc.StatusCode.INTERNAL, "", "layer_error"),
        (grpc.StatusCode.UNKNOWN, "", "layer_error"),
        (grpc.StatusCode.INTERNAL, "StagingError", "layer_error"),
        (grpc.StatusCode.UNAVAILABLE, "NotServing", "layer_not_serving"),
    ],
)
def test_a_layer_without_a_verdict_is_an_outage_of_its_kind(
    code: grpc.StatusCode, error_class: str, kind: str
) -> None:
    error = _translate("format", _error(code, "format: boom", error_class))
    assert isinstance(error, LayerUnavailable)
    assert (error.layer, error.outage, error.http_status, error.oci_code) == (
        "format",
        kind,
        503,
        "UNAVAILABLE",
    )
    assert error.retry_after > 0


@pytest.mark.parametrize(
    ("error_class", "expected"),
    [
        ("UpstreamUnreachable", UpstreamUnreachable),
        ("UpstreamTimeout", UpstreamTimeout),
        ("UpstreamError", UpstreamError),
        ("NotFound", NotFound),
    ],
)
def test_fetcher_upstream_errors_keep_their_class(error_class: str, expected: type) -> None:
    error = _translate("fetcher", _error(grpc.StatusCode.UNAVAILABLE, "upstream: lab", error_class))
    assert type(error) is expected
    # Only an unreachable upstream lets a tag be served from its last admission.
    assert isinstance(error, UpstreamUnreachable) == (
        expected in (UpstreamUnreachable, UpstreamTimeout)
    )
