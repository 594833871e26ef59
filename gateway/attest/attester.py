"""Signing what pullguard admits, and taking the signature back when it revokes.

Order within one admission (see pull/admission.py): the image is published
to the target, then its attestation and signature are made and stored
(pushed beside it, or kept in ``state_dir/attachments/`` for the embedded
target), and only then is the admission committed. If making or storing
either fails, the pull fails as an outage (503, ``target`` step) and the
image is not admitted; whatever part of the pair was already stored is
deleted again (best effort), so no image looks attested that pullguard did
not admit. The image itself may stay in a registry target unattested, as
after any failed publish: its next pull verifies it again and signs it then.

The attestation goes first and the signature last: a client that checks
only ``cosign verify`` sees a signature only once the attestation is there.

With ``attest.mode: referrers`` (or ``both``) each is (also) pushed as an
OCI 1.1 referrer of the admitted manifest, by digest, and listed in the
``sha256-<hex>`` fallback index (:mod:`.referrers`) after both are stored:
the index is what makes them visible on a registry without the referrers
API. A re-admission's new referrers replace the old ones in the index.

On revocation (``reevaluate``) both are removed before the image: nothing
says "admitted by pullguard" for a digest that no longer is. Referrers
leave the fallback index first, then the registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pullguard.gateway.attest import referrers
from pullguard.gateway.attest.documents import (
    SIGNATURE_ARTIFACT,
    Attachment,
    Subject,
    attachment_tag,
    attestation_attachments,
    signature_attachments,
)
from pullguard.gateway.attest.keys import AttestKeyError, SigningKey, load_signing_key
from pullguard.gateway.attest.local import AttachmentStore, is_attachment_tag
from pullguard.gateway.publish import Publisher
from pullguard.gateway.report import Report, now
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import ConfigError, TargetError
from pullguard.v1 import common_pb2

log = logging.getLogger("pullguard.gateway")
#: Findings per verdict named in the attestation (codes only; the report has the rest).
MAX_FINDINGS = 50
MAX_PASSWORD_BYTES = 4096


def load_key(config: Config) -> SigningKey:
    """Decrypt ``attest.key`` with its password; a ConfigError names the key otherwise."""
    attest = config.attest
    assert attest is not None
    password: bytes | None
    if attest.password_file is not None:
        where = attest.password_file
        try:
            with where.open("rb") as handle:
                password = handle.read(MAX_PASSWORD_BYTES + 1).rstrip(b"\r\n")
        except OSError as exc:
            problem = f"{where}: cannot read: {exc.strerror or exc}"
            raise ConfigError(config.source, "attest.password_file", problem) from None
        if len(password) > MAX_PASSWORD_BYTES:
            problem = f"{where}: longer than {MAX_PASSWORD_BYTES} bytes"
            raise ConfigError(config.source, "attest.password_file", problem)
    else:
        text = os.environ.get(attest.password_env)
        password = text.encode() if text is not None else None
    try:
        return load_signing_key(attest.key, password)
    except AttestKeyError as exc:
        raise ConfigError(config.source, "attest.key", exc.message) from None


class Attester:
    """Makes, stores and withdraws pullguard's signature and attestation of a manifest."""

    def __init__(self, config: Config, key: SigningKey, publisher: Publisher | None) -> None:
        self.config = config
        self.key = key
        self.publisher = publisher
        #: The embedded target's attachments (also kept with a registry target: unused there).
        self.local = AttachmentStore(Path(config.state_dir) / "attachments")
        #: Attachments pushed to the target are recorded under this key, apart
        #: from the images' own (whose every digest is an admitted manifest).
        self.records_key = f"{publisher.key} attest" if publisher is not None else ""

    @classmethod
    def for_config(cls, config: Config, publisher: Publisher | None) -> Attester | None:
        if config.attest is None:
            return None
        attester = cls(config, load_key(config), publisher)
        log.info("gateway: admitted manifests are signed with %s", config.attest.key)
        return attester

    def docker_reference(self, repository: str) -> str:
        """The image's name where clients pull it: in the target, or at the front door."""
        if self.publisher is not None:
            host = urlsplit(self.publisher.target.url).netloc
            return f"{host}/{self.publisher.target.repository(repository)}"
        return f"{self.config.listen}/{repository}"

    def owns_tag(self, tag: str) -> bool:
        """A tag only pullguard writes in the target: never an upstream's image tag.

        cosign finds signatures by these tags: an upstream "image" tagged so
        could replay a revoked signature (or list one, as a fallback index).
        """
        if is_attachment_tag(tag):
            return True
        return self.mode != "tag" and referrers.is_fallback_tag(tag)

    @property
    def mode(self) -> str:
        return self.config.attest.mode if self.config.attest is not None else "tag"

    def attachments(
        self, report: Report, plan: common_pb2.Plan, digest: str, media_type: str, size: int
    ) -> list[Attachment]:
        """The attestation, then the signature, of an admission being made.

        ``size``: of the admitted manifest, for the referrers' ``subject``.
        """
        reference = self.docker_reference(report.repository)
        forms = (self.mode, Subject(media_type, digest, size))
        predicate = admission_predicate(report, plan, digest, media_type)
        optional = {
            "dev.pullguard.decision": report.decision_id,
            "dev.pullguard.policy-version": plan.policy_version,
        }
        return [
            *attestation_attachments(self.key, reference, digest, predicate, forms),
            *signature_attachments(self.key, reference, digest, optional, forms),
        ]

    async def attach(
        self, report: Report, plan: common_pb2.Plan, digest: str, media_type: str, size: int
    ) -> list[str]:
        """Sign an admission and store both attachments; TargetError when that fails.

        Returns the tags stored. On failure, the part already stored is removed.
        """
        try:
            made = self.attachments(report, plan, digest, media_type, size)
        except Exception as exc:  # noqa: BLE001 - a key or library failure is an outage
            raise TargetError(f"attest: signing {digest} failed ({type(exc).__name__})") from None
        try:
            replaced: list[str] = []
            for attachment in made:
                replaced += await self._store(report.repository, attachment)
            listed = [a.descriptor() for a in made if a.artifact_type]
            if listed:
                await self._list_referrers(report.repository, digest, listed, replaced)
            if replaced and self.publisher is not None:
                name = self.publisher.target.repository(report.repository)
                for previous in replaced:
                    await self._delete_old(name, previous, f"referrer {previous}")
        except (TargetError, OSError) as exc:
            message = exc.message if isinstance(exc, TargetError) else f"{exc.strerror or exc}"
            await self._undo(report.repository, digest, replaced)
            raise TargetError(f"attest: {message}") from None
        return [attachment.name for attachment in made]

    async def _list_referrers(
        self, repository: str, digest: str, add: list[dict[str, Any]], drop: list[str]
    ) -> None:
        """List ``add`` in ``digest``'s fallback index, and no longer ``drop``."""
        assert self.publisher is not None
        new = {entry["digest"] for entry in add}
        old = set(drop) - new

        def change(listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return referrers.with_entries(referrers.without_entries(listed, old), add)

        def done(listed: list[dict[str, Any]]) -> bool:
            present = {entry.get("digest") for entry in listed}
            return new <= present and not old & present

        name = self.publisher.target.repository(repository)
        await referrers.update_index(self.publisher.client, name, digest, change, done)

    async def withdraw(self, repository: str, digest: str, also: Sequence[str] = ()) -> list[str]:
        """Remove ``digest``'s attachments everywhere; TargetError if the target would not.

        ``also``: more referrers of ``digest`` to remove (replaced ones no
        longer recorded, when a re-signing failed half-way).
        """
        removed = await asyncio.to_thread(self.local.remove, repository, digest)
        if self.publisher is None:
            return removed
        decisions = self.publisher.decisions
        name = self.publisher.target.repository(repository)
        recorded = (
            decisions.published(self.records_key, repository, _record(digest, suffix))
            for suffix in ("sig", "att")
        )
        pushed_referrers = [*also, *(pushed for pushed in recorded if pushed is not None)]
        if pushed_referrers:
            # Out of the index first: listed, a deleted referrer would fail
            # verification loudly instead of being simply absent.
            gone = set(pushed_referrers)
            await referrers.update_index(
                self.publisher.client,
                name,
                digest,
                lambda listed: referrers.without_entries(listed, gone),
                lambda listed: not gone & {entry.get("digest") for entry in listed},
            )
            for referrer in pushed_referrers:
                await self.publisher.client.delete_manifest(name, referrer)
                decisions.forget_published(self.records_key, repository, referrer)
                removed.append(f"referrer {referrer}")
        for suffix in ("sig", "att"):
            tag = attachment_tag(digest, suffix)
            pushed = decisions.published(self.records_key, repository, tag)
            if pushed is None:
                continue
            await self.publisher.client.delete_manifest(name, pushed)
            decisions.forget_published(self.records_key, repository, pushed)
            removed.append(tag)
        return removed

    async def _store(self, repository: str, attachment: Attachment) -> list[str]:
        """Push one attachment; return the digest of a referrer it replaces, if any."""
        if self.publisher is None:
            await asyncio.to_thread(self.local.put, repository, attachment)
            return []
        client = self.publisher.client
        name = self.publisher.target.repository(repository)
        for blob, data in attachment.blobs.items():
            if not await client.has_blob(name, blob):
                await client.push_small_blob(name, blob, data)
        decisions = self.publisher.decisions
        # A referrer has no tag: its digest is recorded under a name of its own.
        record = attachment.tag or _record_of(attachment)
        reference = attachment.tag or attachment.digest
        previous = decisions.published(self.records_key, repository, record)
        # Recorded before the PUT: a PUT whose answer is lost is still withdrawn later.
        decisions.mark_published(self.records_key, repository, record, attachment.digest)
        await client.put_manifest(
            name, reference, attachment.manifest, attachment.media_type, attachment.digest
        )
        if previous is None or previous == attachment.digest:
            return []
        if not attachment.tag:
            # Leaves the index as the new one is listed (attach), then goes.
            return [previous]
        # Signed again (a re-admission): the old one, now untagged, would
        # outlive a revocation, which deletes only what the tag names.
        await self._delete_old(name, previous, attachment.tag)
        return []

    async def _delete_old(self, name: str, previous: str, what: str) -> None:
        assert self.publisher is not None
        try:
            await self.publisher.client.delete_manifest(name, previous)
        except TargetError as exc:
            log.warning("attest: old %s stays in the target %s: %s", what, name, exc.message)

    async def _undo(self, repository: str, digest: str, replaced: Sequence[str] = ()) -> None:
        try:
            await self.withdraw(repository, digest, replaced)
        except (TargetError, OSError) as exc:
            log.error(
                "attest: a partial signature of %s@%s could not be removed: %s",
                repository,
                digest,
                exc,
            )


def _record(digest: str, suffix: str) -> str:
    """What a pushed referrer is recorded under, having no tag: ``sha256-<hex>.sig.referrer``."""
    return f"{attachment_tag(digest, suffix)}.referrer"


def _record_of(attachment: Attachment) -> str:
    subject = json.loads(attachment.manifest)["subject"]["digest"]
    return _record(subject, "sig" if attachment.artifact_type == SIGNATURE_ARTIFACT else "att")


def admission_predicate(
    report: Report, plan: common_pb2.Plan, digest: str, media_type: str
) -> dict[str, Any]:
    """What pullguard decided, as the attestation's predicate (``PREDICATE_TYPE``)."""
    predicate: dict[str, Any] = {
        "decision": {"id": report.decision_id, "time": report.time, "signedAt": now()},
        "image": {
            "repository": report.repository,
            "reference": report.reference_text,
            "digest": digest,
            "mediaType": media_type,
        },
        "upstream": {"alias": plan.upstream.alias, "url": plan.upstream.url},
        "policy": {
            "version": plan.policy_version,
            "rule": {"index": plan.rule.index, "match": plan.rule.match},
        },
        "verdicts": [
            {
                "layer": step.layer,
                "step": step.step,
                "decision": step.decision,
                "findings": [str(f.get("code", "")) for f in step.findings[:MAX_FINDINGS]],
            }
            for step in report.steps
        ],
    }
    if report.waived:
        predicate["waived"] = sorted({str(w.get("code", "")) for w in report.waived})
    if report.release is not None:
        predicate["release"] = report.release.as_json()
    return predicate
