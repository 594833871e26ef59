"""Issue 7's parser differentials end to end, on real parts: Debian's
docker-registry (Go) as upstream, the real skopeo (Go) as the client, and
pullguard started with ``pullguard up``.

A manifest with both ``"layers"`` and ``"Layers"`` is two images: Python reads
the first key, Go's ``encoding/json`` stores both in one field and keeps the
last. The registry accepts it (it checks the layers Go read), skopeo pulls
those other layers straight from the registry, and pullguard refuses the
manifest with ``format.json_key_case_collision``, plain or ``\\u``-escaped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tests.support.images import OCI_MANIFEST, pull, random_layers
from tests.support.registry import PushedImage, push_image_sync, push_manifest_sync
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]
COLLISION = "format.json_key_case_collision"


def _two_faced(benign: PushedImage, evil: PushedImage, key: bytes) -> bytes:
    """``benign``'s manifest with ``key`` (a spelling of Layers) listing ``evil``'s layers last."""
    document = json.loads(benign.manifest)
    evil_layers = json.dumps(evil.descriptors[1:]).encode()
    body = json.dumps(document).encode()
    assert body.endswith(b"]}")
    return body[:-1] + b", " + key + b": " + evil_layers + b"}"


def _layout_blobs(layout: Path) -> set[str]:
    return {"sha256:" + path.name for path in (layout / "blobs" / "sha256").iterdir()}


def test_case_colliding_layers_key_is_denied_through_skopeo(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    benign = push_image_sync(upstream.url, "team/app", "benign", random_layers(1, 4096, seed=1))
    evil = push_image_sync(upstream.url, "team/app", "evil", random_layers(1, 4096, seed=2))
    plain = _two_faced(benign, evil, b'"Layers"')
    escaped = _two_faced(benign, evil, b'"\\u004cayers"')
    push_manifest_sync(upstream.url, "team/app", "v1", plain, OCI_MANIFEST)
    push_manifest_sync(upstream.url, "team/app", "v2", escaped, OCI_MANIFEST)
    evil_layer = str(evil.descriptors[1]["digest"])
    benign_layer = str(benign.descriptors[1]["digest"])

    # What a Go client reads: skopeo straight from the registry takes the last key's layers.
    direct = pull(f"{upstream.address}/team/app:v1", tmp_path / "direct", "v1")
    assert direct.returncode == 0, direct.stderr
    blobs = _layout_blobs(tmp_path / "direct")
    assert evil_layer in blobs and benign_layer not in blobs

    pg = pullguard_factory(upstream.url)
    for tag in ("v1", "v2"):
        result = pull(f"{pg.address}/lab/team/app:{tag}", tmp_path / f"out-{tag}", tag)
        assert result.returncode != 0, result.stdout
        assert "403" in result.stderr or "denied" in result.stderr.lower(), result.stderr
        response = pg.get(f"/v2/lab/team/app/manifests/{tag}")
        assert response.status_code == 403, response.text
        error = response.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert str(error["message"]).startswith("format: "), error
        findings = error["detail"]["findings"]
        assert [f["code"] for f in findings] == [COLLISION], findings
        assert "'Layers' is 'layers' to a Go client" in findings[0]["message"]
    admitted = pg.state_dir / "admitted" / "blobs" / "sha256"
    for body in (plain, escaped):
        assert not (admitted / hashlib.sha256(body).hexdigest()).exists()
    assert not (admitted / evil_layer.split(":", 1)[1]).exists()
