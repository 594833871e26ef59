"""The container image tests build an image (several minutes) and run it with
podman: `make image-test` runs them (PULLGUARD_IMAGE_TEST=1); `make test`
does not collect them."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("PULLGUARD_IMAGE_TEST") == "1" else ["test_*.py"]
