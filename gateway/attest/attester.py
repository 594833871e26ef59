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

On revocation (``reevaluate``) both are removed before the image: nothing
says "admitted by pullguard" for a digest that no longer is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pullguard.gateway.attest.documents import (
    Attachment,
    attachment_tag,
    attestation_attachment,
    signature_attachment,
)
from pullguard.gateway.attest.keys import AttestKeyError, SigningKey, load_signing_key
from pullguard.gateway.attest.local import AttachmentStore
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

    def attachments(
        self, report: Report, plan: common_pb2.Plan, digest: str, media_type: str
    ) -> list[Attachment]:
        """The attestation, then the signature, of an admission being made."""
        reference = self.docker_reference(report.repository)
        predicate = admission_predicate(report, plan, digest, media_type)
        optional = {
            "dev.pullguard.decision": report.decision_id,
            "dev.pullguard.policy-version": plan.policy_version,
        }
        return [
            attestation_attachment(self.key, reference, digest, predicate),
            signature_attachment(self.key, reference, digest, optional),
        ]

    async def attach(
        self, report: Report, plan: common_pb2.Plan, digest: str, media_type: str
    ) -> list[str]:
        """Sign an admission and store both attachments; TargetError when that fails.

        Returns the tags stored. On failure, the part already stored is removed.
        """
        try:
            made = self.attachments(report, plan, digest, media_type)
        except Exception as exc:  # noqa: BLE001 - a key or library failure is an outage
            raise TargetError(f"attest: signing {digest} failed ({type(exc).__name__})") from None
        try:
            for attachment in made:
                await self._store(report.repository, attachment)
        except (TargetError, OSError) as exc:
            message = exc.message if isinstance(exc, TargetError) else f"{exc.strerror or exc}"
            await self._undo(report.repository, digest)
            raise TargetError(f"attest: {message}") from None
        return [attachment.tag for attachment in made]

    async def withdraw(self, repository: str, digest: str) -> list[str]:
        """Remove ``digest``'s attachments everywhere; TargetError if the target would not."""
        removed = await asyncio.to_thread(self.local.remove, repository, digest)
        if self.publisher is None:
            return removed
        decisions = self.publisher.decisions
        name = self.publisher.target.repository(repository)
        for suffix in ("sig", "att"):
            tag = attachment_tag(digest, suffix)
            pushed = decisions.published(self.records_key, repository, tag)
            if pushed is None:
                continue
            await self.publisher.client.delete_manifest(name, pushed)
            decisions.forget_published(self.records_key, repository, pushed)
            removed.append(tag)
        return removed

    async def _store(self, repository: str, attachment: Attachment) -> None:
        if self.publisher is None:
            await asyncio.to_thread(self.local.put, repository, attachment)
            return
        client = self.publisher.client
        name = self.publisher.target.repository(repository)
        for blob, data in attachment.blobs.items():
            if not await client.has_blob(name, blob):
                await client.push_small_blob(name, blob, data)
        decisions = self.publisher.decisions
        previous = decisions.published(self.records_key, repository, attachment.tag)
        # Recorded before the PUT: a PUT whose answer is lost is still withdrawn later.
        decisions.mark_published(self.records_key, repository, attachment.tag, attachment.digest)
        await client.put_manifest(
            name, attachment.tag, attachment.manifest, attachment.media_type, attachment.digest
        )
        if previous is not None and previous != attachment.digest:
            # Signed again (a re-admission): the old one, now untagged, would
            # outlive a revocation, which deletes only what the tag names.
            try:
                await client.delete_manifest(name, previous)
            except TargetError as exc:
                log.warning(
                    "attest: old %s of %s stays in the target: %s",
                    attachment.tag,
                    repository,
                    exc.message,
                )

    async def _undo(self, repository: str, digest: str) -> None:
        try:
            await self.withdraw(repository, digest)
        except (TargetError, OSError) as exc:
            log.error(
                "attest: a partial signature of %s@%s could not be removed: %s",
                repository,
                digest,
                exc,
            )


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
