"""Asking the target whether it still holds a manifest (the store of record).

A 404 is "withdrawn"; a 200 that names another digest, or any other status,
is a TargetError naming the step: never read as "still there" or "gone".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from pullguard.gateway.target import RegistryTarget
from pullguard.services.runtime.errors import TargetError
from tests.support.hostile import HostileUpstream, Reply

NAME = "mirror/lab/team/app"
DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
PATH = f"/v2/{NAME}/manifests/{DIGEST}"
MakeTarget = Callable[..., RegistryTarget]


async def test_a_held_manifest_is_there_and_a_404_is_withdrawn(
    registry: HostileUpstream, make_target: MakeTarget
) -> None:
    target = make_target(registry.url)
    registry.reply(PATH, Reply(headers={"Docker-Content-Digest": DIGEST}), method="HEAD")
    assert await target.has_manifest(NAME, DIGEST) is True
    registry.reply(PATH, Reply(status=404), method="HEAD")
    assert await target.has_manifest(NAME, DIGEST) is False
    assert [s.method for s in registry.seen(PATH)] == ["HEAD", "HEAD"]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (Reply(status=500), "500"),
        (Reply(status=401), "401"),
        (Reply(headers={"Docker-Content-Digest": "sha256:" + "0" * 64}), "target stored"),
    ],
    ids=["server-error", "unauthorised", "other-digest"],
)
async def test_an_unclear_answer_is_an_error_not_a_yes_or_no(
    registry: HostileUpstream, make_target: MakeTarget, reply: Reply, problem: str
) -> None:
    target = make_target(registry.url)
    registry.reply(PATH, reply, method="HEAD")
    with pytest.raises(TargetError, match=problem) as raised:
        await target.has_manifest(NAME, DIGEST)
    assert "HEAD manifest" in raised.value.message
