"""Notifications end to end: Debian's docker-registry, `pullguard up`, and a real HTTP
receiver on 127.0.0.1 that blocks while pulls go on.

The tag is pinned to another digest than the upstream serves: each pull is
denied by hashverify after the manifest was staged, so its content is
quarantined, and the first one tells that the tag moved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.support.images import build_image, push, random_layers
from tests.support.receiver import Receiver, as_json
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

SECRET = b"receiver secret for the e2e test"
PINNED = "sha256:" + "5" * 64


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    yield hook
    hook.close()


def _denied(pg: Pullguard) -> str:
    response = pg.get("/v2/lab/vendor/app/manifests/v1")
    assert response.status_code == 403, response.text
    detail: dict[str, Any] = response.json()["errors"][0]["detail"]
    assert {f["code"] for f in detail["findings"]} == {"hash.pin_mismatch"}
    return str(detail["decision"])


def test_denials_are_posted_signed_and_a_blocked_receiver_delays_no_pull(
    upstream: RegistryProcess,
    pullguard_factory: Callable[..., Pullguard],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(1, 16 * 1024, seed=71))
    push(image, upstream.address, "vendor/app")
    (tmp_path / "pins.yaml").write_text(f"v1: {PINNED}\n")
    (tmp_path / "hook.secret").write_bytes(SECRET)
    pg = pullguard_factory(
        upstream.url,
        policy={"rules": [{"match": "lab/**", "signature": "none", "pins": "pins.yaml"}]},
        notifications=[
            {
                "url": receiver.url,
                "events": ["deny", "quarantine", "moved_tag"],
                "secret_file": "hook.secret",
                "timeout": 120,
            }
        ],
    )
    receiver.hold()
    first = _denied(pg)
    receiver.wait_holding()
    # The sender waits on the receiver; the next pull is decided all the same.
    second = _denied(pg)
    assert receiver.holding, "the receiver let go before the second pull ended"
    receiver.release()

    got = receiver.wait_for(5)
    bodies = [as_json(r) for r in got]
    assert Counter((b["decision"], b["event"]) for b in bodies) == Counter(
        {
            (first, "deny"): 1,
            (first, "quarantine"): 1,
            (first, "moved_tag"): 1,
            (second, "deny"): 1,
            (second, "quarantine"): 1,
        }
    ), pg.log()
    for received, body in zip(got, bodies, strict=True):
        headers = received.headers
        assert verify(SECRET, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER], received.body)
        assert body["digest"] == image.digest and body["layer"] == "hashverify"
        assert body["findings"] == ["hash.pin_mismatch"] and body["outcome"] == "denied"
    (moved,) = [b for b in bodies if b["event"] == "moved_tag"]
    assert moved["previous_digest"] == PINNED
