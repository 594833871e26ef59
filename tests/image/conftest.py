"""The container image tests build an image (several minutes) and run it with
podman: `make image-test` runs them (PULLGUARD_IMAGE_TEST=1); `make test`
does not collect them."""

from __future__ import annotations

import os

import pytest

from tests.support.podman_image import build_image

collect_ignore_glob = [] if os.environ.get("PULLGUARD_IMAGE_TEST") == "1" else ["test_*.py"]


@pytest.fixture(scope="session")
def image() -> str:
    """localhost/pullguard:image-test, built by `make image`."""
    return build_image()
