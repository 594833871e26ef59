"""Signature verification end to end (issue 4): `pullguard up`, Debian's
docker-registry as the upstream, skopeo as the client.

Signatures come from real signers wherever one exists: keyed cosign
signatures from the cosign 2.5 binary in each storage form it writes (the
``sha256-<hex>.sig`` tag, an OCI 1.1 referrer listed in the ``sha256-<hex>``
fallback index, a sigstore bundle referrer, ``COSIGN_REPOSITORY``), keyless
bundles from @sigstore/sign against @sigstore/mock's Fulcio and Rekor
(tests/support/signers/node/keyless.js). What cosign refuses to make (a
flood, an oversized payload, a referrer under a foreign subject, a lying
annotation) is crafted in its published format by tests/support/signers.
Mix-and-match cases reuse real cosign signatures copied where they do not
belong, which is exactly the attack.

Denials are read from the 403's OCI error (``detail.findings``: the codes
that denied) and from the decision report (``pullguard decisions --json``),
where every layer's findings are kept, warnings and notes included.

A stack start is most of an end-to-end test's time, so the tests whose
policy is one of a few share one upstream and one stack for the module
(``signed_stack``): each test's rule is chosen by the repository its image
lives in (``signed/<rule>/<test>``, see ``uses``), and each image has bytes
of its own, so no test sees another's signatures or verdicts. Tests that
need limits or a trust root of their own start their own stack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cosign import (
    LocalSigner,
    SignatureLayer,
    cosign_binary,
    generate_key_pair,
    simple_signing_payload,
)
from tests.support.hostile import HostileUpstream, Reply
from tests.support.images import (
    BuiltImage,
    build_image,
    layout_manifest_digest,
    pull,
    push,
    random_layers,
)
from tests.support.registry_process import RegistryProcess
from tests.support.signers import bundles, crafted, oci
from tests.support.signers.cosign_cli import (
    attest,
    sign_bundle,
    sign_referrer,
    sign_tag,
    slsa_v02_predicate,
)
from tests.support.signers.keyless import (
    GITHUB_ISSUER,
    KeylessJob,
    KeylessRun,
    make_keyless,
    node_ready,
    workflow_identity,
)
from tests.support.stack import Pullguard, pullguard_command, report_findings

StartPullguard = Callable[..., Pullguard]
TestFunction = Callable[..., Any]

#: The repository of the tests that play the upstream with a hostile registry.
REPO = "signed/app"
BUILDER = "https://github.com/pullguard/builders/.github/workflows/build.yml@refs/tags/v1"
SOURCE = "https://github.com/pullguard/app"
LAYER_TIMEOUT = 20.0


# -- the world: an upstream with one image per test, keys made by cosign -----


@dataclass
class Keyring:
    """The module's signers: cosign key pairs by name, and one in-process key
    (``ci``), so that the shared stack's policy can name them before any test."""

    folder: Path
    ci: LocalSigner = field(default_factory=lambda: LocalSigner("ci.pub"))
    _keys: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def key(self, who: str) -> Path:
        """``who``'s cosign private key (made on first use)."""
        return self._pair(who)[0]

    def pub(self, who: str) -> str:
        """``who``'s cosign public key file, as a policy names it."""
        return str(self._pair(who)[1])

    def _pair(self, who: str) -> tuple[Path, Path]:
        if who not in self._keys:
            self._keys[who] = generate_key_pair(self.folder / who)
        return self._keys[who]

    @property
    def ci_pub(self) -> str:
        path = self.folder / self.ci.name
        if not path.exists():
            path.write_text(self.ci.pem)
        return str(path)


@dataclass
class World:
    upstream: RegistryProcess
    image: BuiltImage
    tmp: Path
    keys: Keyring
    #: This test's repository: ``signed/<rule>/<test>``.
    repo: str

    def key(self, who: str) -> Path:
        return self.keys.key(who)

    def pub(self, who: str) -> str:
        return self.keys.pub(who)

    def local_pub(self, signer: LocalSigner) -> str:
        """Write an in-process key's public half to a file for the policy."""
        path = self.tmp / "keys" / f"{signer.name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(signer.pem)
        return str(path)

    @property
    def digest(self) -> str:
        return self.image.digest

    def name(self, repository: str | None = None) -> str:
        """The repository's name as the upstream is reached: what signatures must name."""
        return f"{self.upstream.address}/{repository or self.repo}"

    def ref(self, repository: str | None = None, digest: str | None = None) -> str:
        return f"{self.name(repository)}@{digest or self.digest}"

    @property
    def subject(self) -> dict[str, object]:
        return {
            "mediaType": oci.OCI_MANIFEST,
            "size": len(self.image.manifest),
            "digest": self.digest,
        }

    def push_image(self, repository: str, seed: int, tag: str = "v1") -> BuiltImage:
        built = build_image(self.tmp / f"src-{seed}", tag, random_layers(1, 4096, seed=seed))
        push(built, self.upstream.address, repository)
        return built


def uses(rule: str) -> Callable[[TestFunction], TestFunction]:
    """Put the test's image under ``signed/<rule>/``, where ``signed_stack``
    applies that rule of ``_shared_rules`` (``own``: no shared rule, the
    test starts a stack of its own)."""

    def mark(test: TestFunction) -> TestFunction:
        test.rule = rule  # type: ignore[attr-defined]
        return test

    return mark


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    return Keyring(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def world(
    shared_upstream: RegistryProcess,
    keyring: Keyring,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> World:
    """This test's image, alone in its repository, with bytes of its own."""
    rule = getattr(request.function, "rule", "own")
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    seed = int(hashlib.sha256(slug.encode()).hexdigest()[:8], 16)
    repo = f"signed/{rule}/{slug}"
    image = build_image(tmp_path / "src", "v1", random_layers(2, 16 * 1024, seed=seed))
    push(image, shared_upstream.address, repo)
    return World(shared_upstream, image, tmp_path, keyring, repo)


def _shared_rules(keys: Keyring) -> list[dict[str, Any]]:
    """One rule per policy the sharing tests need, by repository prefix."""
    alice = keys.pub("alice")

    def provenance(signer: str) -> dict[str, Any]:
        """Signed SLSA provenance from BUILDER and SOURCE, by ``signer``."""
        return {
            "required": True,
            "builder_ids": [BUILDER],
            "source_repositories": [SOURCE],
            "signers": {"keys": [signer]},
        }

    signatures: dict[str, Any] = {
        "alice": {"keys": [alice]},
        "ci": {"keys": [keys.ci_pub]},
        "store": {"keys": [alice], "repository": "sigs/store"},
        "two": {"keys": [alice, keys.pub("bob")], "threshold": 2},
        "warn": {"keys": [alice], "mode": "warn"},
    }
    rules = [{"match": f"lab/signed/{n}/**", "signature": s} for n, s in signatures.items()]
    rules.append(
        {"match": "lab/signed/prov/**", "signature": "none", "provenance": provenance(alice)}
    )
    rules.append(
        {
            "match": "lab/signed/provci/**",
            "signature": "none",
            "provenance": provenance(keys.ci_pub),
        }
    )
    return [*rules, {"match": "lab/**", "signature": "none"}]


@pytest.fixture(scope="module")
def signed_stack(
    shared_upstream: RegistryProcess, keyring: Keyring, module_pullguard_factory: StartPullguard
) -> Pullguard:
    """The stack of every test marked ``uses(<rule>)`` with a shared rule."""
    return _start(module_pullguard_factory, shared_upstream.url, {"rules": _shared_rules(keyring)})


@pytest.fixture
def keyless_ready() -> None:
    if not node_ready():
        pytest.fail("node packages are missing: run scripts/install-node-test-deps.sh")


# -- policies, pulls, reports -------------------------------------------------


def _policy(signature: Any, match: str = "lab/signed/**", **rule: Any) -> dict[str, Any]:
    return {
        "rules": [
            {"match": match, "signature": signature, **rule},
            {"match": "lab/**", "signature": "none"},
        ]
    }


def _start(factory: StartPullguard, url: str, policy: dict[str, Any], **limits: Any) -> Pullguard:
    return factory(url, policy=policy, limits={"layer_timeout": LAYER_TIMEOUT, **limits})


def _pull_passes(
    pg: Pullguard, out: Path, digest: str, repository: str, tag: str = "v1"
) -> dict[str, Any]:
    """skopeo pulls through pullguard; returns the decision report of that pull."""
    result = pull(f"{pg.address}/lab/{repository}:{tag}", out, tag)
    assert result.returncode == 0, result.stderr + pg.log()[-4000:]
    assert layout_manifest_digest(out, tag) == digest
    return _allowed_report(pg, digest)


def _denied(pg: Pullguard, repository: str, tag: str = "v1") -> tuple[set[str], dict[str, Any]]:
    """GET the manifest through pullguard: 403; returns (codes that denied, report)."""
    response = pg.get(f"/v2/lab/{repository}/manifests/{tag}")
    assert response.status_code == 403, (
        response.status_code,
        response.text[:2000],
        pg.log()[-4000:],
    )
    error = response.json()["errors"][0]
    codes = {f["code"] for f in error["detail"]["findings"]}
    return codes, _report(pg, error["detail"]["decision"])


def _decisions(pg: Pullguard) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*pullguard_command(), "decisions", "--config", str(pg.config_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def _report(pg: Pullguard, decision_id: str) -> dict[str, Any]:
    for report in _decisions(pg):
        if report["decision_id"] == decision_id:
            return report
    raise AssertionError(f"decision {decision_id} not recorded")


def _allowed_report(pg: Pullguard, digest: str) -> dict[str, Any]:
    for report in _decisions(pg):
        if report["digest"] == digest and report["decision"] == "ALLOW":
            return report
    raise AssertionError(f"no ALLOW decision for {digest}")


def _accepted(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in report["signatures"] if s["accepted"]]


def _sig_blob_gets(upstream: RegistryProcess, repository: str) -> int:
    return sum(1 for r in upstream.requests() if r.startswith(f"GET /v2/{repository}/blobs/"))


# -- G-01 (b): every storage place, found and accepted ------------------------


@uses("alice")
def test_g01_signature_in_sig_tag_passes(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    sign_tag(world.ref(), world.key("alice"))
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    accepted = _accepted(report)
    assert accepted, report["signatures"]
    assert oci.signature_tag(world.digest) in accepted[0]["location"]


@uses("alice")
def test_g01_referrer_in_fallback_tag_passes(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    # cosign --registry-referrers-mode=oci-1-1 on distribution 2.8: no .sig
    # tag, only the referrer listed in the sha256-<hex> fallback index.
    sign_referrer(world.ref(), world.key("alice"))
    assert oci.signature_tag(world.digest) not in oci.tags(world.upstream.url, world.repo)
    assert oci.fallback_tag(world.digest) in oci.tags(world.upstream.url, world.repo)
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert _accepted(report), report["signatures"]
    assert ".sig" not in _accepted(report)[0]["location"]


@uses("alice")
def test_g01_bundle_referrer_in_fallback_tag_passes(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    # The shape cosign v3's `sign` writes (a DSSE statement of type
    # https://sigstore.dev/cosign/sign/v1 in a bundle v0.3 referrer), here
    # made by cosign 2.5's `attest --new-bundle-format`.
    sign_bundle(world.ref(), world.key("alice"))
    assert oci.signature_tag(world.digest) not in oci.tags(world.upstream.url, world.repo)
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert _accepted(report), report["signatures"]


@uses("ci")
def test_g01_key_message_bundle_referrer_passes(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    # A message-signature bundle over the manifest (cosign's second bundle
    # content); cosign 2.5 cannot push one for an image, so it is made in
    # its format with a key the rule trusts.
    signer = world.keys.ci
    referrer = bundles.bundle_referrer(
        bundles.key_message_bundle(world.image.manifest, signer), world.subject
    )
    oci.add_referrer(
        world.upstream.url, world.repo, world.digest, referrer, bundles.BUNDLE_INDEX_ARTIFACT_TYPE
    )
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert _accepted(report), report["signatures"]


async def test_g01_referrer_via_referrers_api_passes(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    # No registry on this machine offers the OCI 1.1 referrers API
    # (Debian's docker-registry is distribution 2.8: GET .../referrers/<d>
    # answers 404), so the hostile upstream plays a small registry that
    # does. The image and its referrer are real: pushed with skopeo and
    # signed with cosign (oci-1-1 mode, naming the hostile registry) on a
    # scratch docker-registry, then served byte for byte.
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    async with HostileUpstream() as registry:
        image = build_image(tmp_path / "src", "v1", random_layers(1, 8192, seed=43))
        push(image, upstream.address, REPO)
        key, pub = generate_key_pair(tmp_path / "alice")
        await asyncio.to_thread(
            sign_referrer,
            f"{upstream.address}/{REPO}@{image.digest}",
            key,
            f"{registry.host}/{REPO}",
        )
        index = oci.read_artifact(upstream.url, REPO, oci.fallback_tag(image.digest))
        assert index is not None
        listed = list(index.document["manifests"])
        referrer = oci.read_artifact(upstream.url, REPO, str(listed[0]["digest"]))
        served = oci.read_artifact(upstream.url, REPO, "v1")
        assert referrer is not None and served is not None
        oci.serve_minimal_registry(
            registry,
            REPO,
            {"v1": served, referrer.digest: referrer},
            referrers={image.digest: listed},
        )
        pg = await asyncio.to_thread(
            _start, pullguard_factory, registry.url, _policy({"keys": [str(pub)]})
        )

        report = await asyncio.to_thread(_pull_passes, pg, tmp_path / "out", image.digest, REPO)

        assert _accepted(report), report["signatures"]
        assert registry.seen(f"/v2/{REPO}/referrers/{image.digest}")


@uses("store")
def test_signature_in_alternative_repository_passes(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    sign_tag(world.ref(), world.key("alice"), repository=world.name("sigs/store"))
    assert oci.signature_tag(world.digest) in oci.tags(world.upstream.url, "sigs/store")
    assert oci.signature_tag(world.digest) not in oci.tags(world.upstream.url, world.repo)
    pg = signed_stack  # the rule: {"keys": [alice], "repository": "sigs/store"}

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert _accepted(report), report["signatures"]
    assert "sigs/store" in _accepted(report)[0]["location"]


@uses("alice")
def test_signature_in_alternative_repository_not_used_without_the_rule_key(
    world: World, signed_stack: Pullguard
) -> None:
    sign_tag(world.ref(), world.key("alice"), repository=world.name("sigs/store"))
    pg = signed_stack

    codes, report = _denied(pg, world.repo)

    assert "signature.missing" in codes
    assert report["denied_by"] == "signature"


@pytest.mark.parametrize("failing", ["sig-tag", "referrers-api"])
async def test_g01c_failed_lookup_is_never_unsigned_but_fine(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path, failing: str
) -> None:
    # Warn mode would admit an unsigned image; a lookup that failed (500)
    # must not be taken for "unsigned" and admitted. The hostile upstream
    # plays the registry because a real one does not fail on demand.
    async with HostileUpstream() as registry:
        image = build_image(tmp_path / "src", "v1", random_layers(1, 4096, seed=45))
        push(image, upstream.address, REPO)
        served = oci.read_artifact(upstream.url, REPO, "v1")
        assert served is not None
        oci.serve_minimal_registry(registry, REPO, {"v1": served}, referrers={image.digest: []})
        broken = (
            f"/v2/{REPO}/manifests/{oci.signature_tag(image.digest)}"
            if failing == "sig-tag"
            else f"/v2/{REPO}/referrers/{image.digest}"
        )
        registry.reply(broken, Reply(status=500, body=b"internal error"))
        registry.reply(broken, Reply(status=500), method="HEAD")
        signer = LocalSigner("ci.pub")
        key = tmp_path / "ci.pub"
        key.write_text(signer.pem)
        policy = _policy({"keys": [str(key)], "mode": "warn"})
        pg = await asyncio.to_thread(_start, pullguard_factory, registry.url, policy)

        response = await asyncio.to_thread(pg.get, f"/v2/lab/{REPO}/manifests/v1")

        assert response.status_code >= 500, (response.status_code, response.text[:500])
        newest = (await asyncio.to_thread(_decisions, pg))[0]
        assert newest["decision"] != "ALLOW" and not newest["admitted"]
        assert newest["transient"], newest
        assert registry.seen(broken)
        assert not (pg.state_dir / "admitted" / "blobs" / "sha256" / image.digest[7:]).exists()


# -- denials that say which ---------------------------------------------------


@uses("alice")
def test_g01_unsigned_image_denied_as_missing(world: World, signed_stack: Pullguard) -> None:
    # G-01 (d) too: distribution 2.8 has no referrers API and there is no
    # fallback tag, and that is "unsigned", not "unknown".
    pg = signed_stack

    codes, report = _denied(pg, world.repo)

    assert codes == {"signature.missing"}
    assert report["denied_by"] == "signature"
    assert not (pg.state_dir / "admitted" / "blobs" / "sha256" / world.digest[7:]).exists()


@uses("alice")
def test_g12_foreign_key_denied(world: World, signed_stack: Pullguard) -> None:
    sign_tag(world.ref(), world.key("mallory"))
    sign_bundle(world.ref(), world.key("mallory"))
    pg = signed_stack

    codes, report = _denied(pg, world.repo)

    assert codes == {"signature.untrusted_key"}
    assert report["signatures"] and not _accepted(report)


@uses("alice")
def test_g02_signature_for_another_digest_denied(world: World, signed_stack: Pullguard) -> None:
    # A real signature of image B (same repository, same trusted key)
    # copied to image A's .sig tag.
    other = world.push_image(world.repo, seed=42, tag="v2")
    sign_tag(world.ref(digest=other.digest), world.key("alice"))
    oci.copy_artifact(
        world.upstream.url,
        world.repo,
        oci.signature_tag(other.digest),
        world.repo,
        oci.signature_tag(world.digest),
    )
    pg = signed_stack

    codes, _report_ = _denied(pg, world.repo)

    assert codes == {"signature.wrong_digest"}


@uses("ci")
def test_g02_crafted_wrong_digest_denied(world: World, signed_stack: Pullguard) -> None:
    signer = world.keys.ci
    other_digest = "sha256:" + "ab" * 32
    sig = crafted.wrong_digest(signer, world.name(), other_digest)
    oci.push_artifact(world.upstream.url, world.repo, oci.signature_tag(world.digest), sig)
    pg = signed_stack

    codes, _report_ = _denied(pg, world.repo)

    assert codes == {"signature.wrong_digest"}


@uses("alice")
def test_signature_for_another_repository_denied(world: World, signed_stack: Pullguard) -> None:
    # The same image in <repo>-copy carries the .sig that cosign made for
    # <repo>: cosign verify accepts that; pullguard must not.
    copy = f"{world.repo}-copy"
    push(world.image, world.upstream.address, copy)
    sign_tag(world.ref(), world.key("alice"))
    oci.copy_artifact(world.upstream.url, world.repo, oci.signature_tag(world.digest), copy)
    pg = signed_stack

    codes, _report_ = _denied(pg, repository=copy)

    assert codes == {"signature.wrong_repository"}


def test_signature_for_another_repository_passes_with_identity_remap(
    world: World, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    copy = f"{world.repo}-copy"
    push(world.image, world.upstream.address, copy)
    sign_tag(world.ref(), world.key("alice"))
    oci.copy_artifact(world.upstream.url, world.repo, oci.signature_tag(world.digest), copy)
    policy = _policy(
        {"keys": [world.pub("alice")], "identity": world.name(world.repo)}, match=f"lab/{copy}"
    )
    pg = _start(pullguard_factory, world.upstream.url, policy)

    report = _pull_passes(pg, tmp_path / "out", world.digest, repository=copy)

    assert _accepted(report), report["signatures"]


@uses("ci")
def test_crafted_wrong_repository_denied(world: World, signed_stack: Pullguard) -> None:
    signer = world.keys.ci
    sig = crafted.wrong_repository(signer, world.name("someone/else"), world.digest)
    oci.push_artifact(world.upstream.url, world.repo, oci.signature_tag(world.digest), sig)
    pg = signed_stack

    codes, _report_ = _denied(pg, world.repo)

    assert codes == {"signature.wrong_repository"}


@uses("ci")
def test_f15_referrer_with_another_subject_is_not_a_signature(
    world: World, signed_stack: Pullguard
) -> None:
    # A valid bundle for image B, by the trusted key, listed in image A's
    # fallback index: the referrer's subject (and statement) name B.
    other = world.push_image(world.repo, seed=44, tag="v2")
    signer = world.keys.ci
    other_subject = {
        "mediaType": oci.OCI_MANIFEST,
        "size": len(other.manifest),
        "digest": other.digest,
    }
    referrer = crafted.foreign_subject_referrer(signer, world.name(), other.digest, other_subject)
    oci.add_referrer(
        world.upstream.url, world.repo, world.digest, referrer, bundles.BUNDLE_INDEX_ARTIFACT_TYPE
    )
    pg = signed_stack

    codes, report = _denied(pg, world.repo)

    assert "signature.subject_mismatch" in codes | {f["code"] for f in report_findings(report)}
    assert not _accepted(report)


# -- keyless ------------------------------------------------------------------


def _keyless_policy(run: KeylessRun, subject: str, **extra: Any) -> dict[str, Any]:
    return _policy(
        {
            "keyless": [{"issuer": GITHUB_ISSUER, "subject": subject}],
            "trusted_root": str(run.trusted_root),
            **extra,
        }
    )


def _keyless_referrer(world: World, run: KeylessRun, name: str) -> None:
    referrer = bundles.bundle_referrer(run.bundle(name), world.subject)
    oci.add_referrer(
        world.upstream.url, world.repo, world.digest, referrer, bundles.BUNDLE_INDEX_ARTIFACT_TYPE
    )


@pytest.mark.parametrize("kind", ["dsse", "message"])
def test_keyless_bundle_referrer_passes(
    world: World,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
    keyless_ready: None,
    kind: str,
) -> None:
    identity = workflow_identity("pullguard/app")
    payload = (
        bundles.cosign_sign_statement(world.digest, world.name())
        if kind == "dsse"
        else world.image.manifest
    )
    run = make_keyless(
        tmp_path / "keyless", [KeylessJob("sig", kind, identity, GITHUB_ISSUER, payload)]
    )
    _keyless_referrer(world, run, "sig")
    pg = _start(pullguard_factory, world.upstream.url, _keyless_policy(run, identity))

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert [s["signer"] for s in _accepted(report)] and identity in _accepted(report)[0]["signer"]


def test_keyless_legacy_sig_with_certificate_and_set_passes(
    world: World, pullguard_factory: StartPullguard, tmp_path: Path, keyless_ready: None
) -> None:
    # cosign 2.x's keyless .sig layer: the simple-signing payload signed by
    # a Fulcio-certified key, with certificate, chain and Rekor SET as
    # annotations; rekor: required, so the SET is checked, offline.
    identity = workflow_identity("pullguard/app")
    payload = simple_signing_payload(world.name(), world.digest)
    run = make_keyless(
        tmp_path / "keyless", [KeylessJob("sig", "message", identity, GITHUB_ISSUER, payload)]
    )
    layer = bundles.legacy_keyless_layer(payload, run.bundle_json("sig"), run.ca_certificates())
    oci.push_artifact(
        world.upstream.url,
        world.repo,
        oci.signature_tag(world.digest),
        crafted.sig_artifact([layer]),
    )
    pg = _start(
        pullguard_factory, world.upstream.url, _keyless_policy(run, identity, rekor="required")
    )

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert _accepted(report), report["signatures"]


def test_g11_keyless_wrong_identity_denied(
    world: World, pullguard_factory: StartPullguard, tmp_path: Path, keyless_ready: None
) -> None:
    wanted = workflow_identity("pullguard/app")
    attacker = workflow_identity("attacker/app")
    statement = bundles.cosign_sign_statement(world.digest, world.name())
    run = make_keyless(
        tmp_path / "keyless", [KeylessJob("sig", "dsse", attacker, GITHUB_ISSUER, statement)]
    )
    _keyless_referrer(world, run, "sig")
    pg = _start(pullguard_factory, world.upstream.url, _keyless_policy(run, wanted))

    codes, _report_ = _denied(pg, world.repo)

    assert codes == {"signature.wrong_identity"}


def test_g11_keyless_right_subject_wrong_issuer_denied(
    world: World, pullguard_factory: StartPullguard, tmp_path: Path, keyless_ready: None
) -> None:
    identity = workflow_identity("pullguard/app")
    statement = bundles.cosign_sign_statement(world.digest, world.name())
    run = make_keyless(
        tmp_path / "keyless",
        [KeylessJob("sig", "dsse", identity, "https://accounts.google.com", statement)],
    )
    _keyless_referrer(world, run, "sig")
    pg = _start(pullguard_factory, world.upstream.url, _keyless_policy(run, identity))

    codes, _report_ = _denied(pg, world.repo)

    assert codes == {"signature.wrong_identity"}


@pytest.mark.parametrize("foreign_ca", ["older", "newer"])
def test_g10e_keyless_bundle_from_a_foreign_ca_denied(
    world: World,
    pullguard_factory: StartPullguard,
    tmp_path: Path,
    keyless_ready: None,
    foreign_ca: str,
) -> None:
    # Same identity and the same CA name, but certified by another (test)
    # Fulcio instance. When the foreign CA is older, its signature predates
    # the trusted CA's validity, and the X.509 verifier's own error then
    # reads like an expiry; the finding must still say "untrusted".
    identity = workflow_identity("pullguard/app")
    statement = bundles.cosign_sign_statement(world.digest, world.name())
    job = KeylessJob("sig", "dsse", identity, GITHUB_ISSUER, statement)
    runs = {}
    for which in ["foreign", "trusted"] if foreign_ca == "older" else ["trusted", "foreign"]:
        runs[which] = make_keyless(tmp_path / which, [job])
        time.sleep(1.1)  # certificate times have one-second resolution
    foreign, trusted = runs["foreign"], runs["trusted"]
    _keyless_referrer(world, foreign, "sig")
    pg = _start(pullguard_factory, world.upstream.url, _keyless_policy(trusted, identity))

    codes, report = _denied(pg, world.repo)

    assert codes == {"signature.untrusted_certificate"}
    assert not _accepted(report)


# -- threshold ----------------------------------------------------------------


@uses("two")
def test_threshold_two_passes_with_two_signers(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    sign_tag(world.ref(), world.key("alice"))
    sign_tag(world.ref(), world.key("bob"))  # cosign appends a layer to the .sig
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert len({s["signer"] for s in _accepted(report)}) == 2


@uses("two")
def test_threshold_two_passes_with_signers_in_two_places(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    # Discovery looks everywhere at once: one signer in .sig, one as a referrer.
    sign_tag(world.ref(), world.key("alice"))
    sign_bundle(world.ref(), world.key("bob"))
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert len({s["signer"] for s in _accepted(report)}) == 2


@uses("two")
def test_threshold_two_fails_with_one_signer(world: World, signed_stack: Pullguard) -> None:
    sign_tag(world.ref(), world.key("alice"))
    pg = signed_stack

    codes, report = _denied(pg, world.repo)

    assert codes == {"signature.threshold_not_met"}
    assert len(_accepted(report)) == 1


@uses("two")
def test_threshold_two_fails_with_one_signer_twice(world: World, signed_stack: Pullguard) -> None:
    # The same signer in two places is still one signer.
    sign_tag(world.ref(), world.key("alice"))
    sign_bundle(world.ref(), world.key("alice"))
    pg = signed_stack

    codes, _report_ = _denied(pg, world.repo)

    assert codes == {"signature.threshold_not_met"}


# -- warn mode ----------------------------------------------------------------


@uses("warn")
def test_warn_mode_admits_an_unsigned_image_and_reports_it(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    pg = signed_stack  # the rule: {"keys": [alice], "mode": "warn"}

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    warnings = [f for f in report_findings(report, "signature") if f["severity"] == "WARNING"]
    assert [f["code"] for f in warnings] == ["signature.missing"]
    assert report["decision"] == "ALLOW" and report["admitted"]


@uses("warn")
def test_warn_mode_admits_a_foreign_signature_and_reports_it(
    world: World, signed_stack: Pullguard, tmp_path: Path
) -> None:
    sign_tag(world.ref(), world.key("mallory"))
    pg = signed_stack  # the rule: {"keys": [alice], "mode": "warn"}

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    warnings = {
        f["code"] for f in report_findings(report, "signature") if f["severity"] == "WARNING"
    }
    assert warnings == {"signature.untrusted_key"}


# -- limits (G-08, G-09) ------------------------------------------------------


@uses("ci")
def test_g08_signature_flood_denied(world: World, signed_stack: Pullguard) -> None:
    signer = world.keys.ci
    sig = crafted.flood(signer, world.name(), world.digest, count=101)
    oci.push_artifact(world.upstream.url, world.repo, oci.signature_tag(world.digest), sig)
    before = _sig_blob_gets(world.upstream, world.repo)
    pg = signed_stack

    codes, _report_ = _denied(pg, world.repo)

    # The fetcher refuses the artifact before downloading it (max_blobs), or
    # the signature layer refuses the layer count: either says "too many".
    assert codes & {"fetch.too_many_blobs", "signature.too_many"}, codes
    # Stopped at the cap: never one request per signature beyond it.
    assert _sig_blob_gets(world.upstream, world.repo) - before <= 101


def test_g09_oversized_signature_denied(world: World, pullguard_factory: StartPullguard) -> None:
    signer = LocalSigner("ci.pub")
    sig = crafted.oversized(signer, world.name(), world.digest, size=100 * 1024)
    oci.push_artifact(world.upstream.url, world.repo, oci.signature_tag(world.digest), sig)
    pg = _start(
        pullguard_factory,
        world.upstream.url,
        _policy({"keys": [world.local_pub(signer)]}),
        signature_bytes=64 * 1024,
    )

    codes, _report_ = _denied(pg, world.repo)

    assert codes & {"fetch.blob_too_large", "signature.too_large"}, codes


# -- signed provenance (issue 4, part 4) --------------------------------------


def _provenance_denied(pg: Pullguard, repository: str, *expected: str) -> dict[str, Any]:
    """Denied by the source layer with one of ``expected`` (source.provenance_*)."""
    codes, report = _denied(pg, repository)
    assert report["denied_by"] == "source", report["denied_by"]
    assert len(codes) == 1 and codes <= set(expected), codes
    return report


@pytest.mark.parametrize("new_bundle_format", [False, True], ids=["att-tag", "bundle-referrer"])
@uses("prov")
def test_signed_provenance_required_passes(
    world: World, signed_stack: Pullguard, tmp_path: Path, new_bundle_format: bool
) -> None:
    attest(
        world.ref(),
        world.key("alice"),
        slsa_v02_predicate(BUILDER, SOURCE),
        new_bundle_format=new_bundle_format,
    )
    pg = signed_stack

    report = _pull_passes(pg, tmp_path / "out", world.digest, world.repo)

    assert report["decision"] == "ALLOW"


@uses("prov")
def test_provenance_required_denied_without_attestation(
    world: World, signed_stack: Pullguard
) -> None:
    sign_tag(world.ref(), world.key("alice"))  # a signature is not provenance
    pg = signed_stack

    _provenance_denied(pg, world.repo, "source.provenance_missing")


@uses("prov")
def test_provenance_from_an_untrusted_signer_denied(world: World, signed_stack: Pullguard) -> None:
    attest(world.ref(), world.key("mallory"), slsa_v02_predicate(BUILDER, SOURCE))
    pg = signed_stack

    report = _provenance_denied(pg, world.repo, "source.provenance_missing")
    # It was found and refused for its signer, not overlooked.
    assert "signature.untrusted_key" in {f["code"] for f in report_findings(report)}


@pytest.mark.parametrize(
    ("builder", "source", "code"),
    [
        (
            "https://github.com/attacker/builders/.github/workflows/build.yml@refs/tags/v1",
            SOURCE,
            "source.provenance_builder_mismatch",
        ),
        (BUILDER, "https://github.com/attacker/app", "source.provenance_source_mismatch"),
    ],
    ids=["wrong-builder", "wrong-source"],
)
@uses("prov")
def test_provenance_with_another_builder_or_source_denied(
    world: World, signed_stack: Pullguard, builder: str, source: str, code: str
) -> None:
    attest(world.ref(), world.key("alice"), slsa_v02_predicate(builder, source))
    pg = signed_stack

    _provenance_denied(pg, world.repo, code)


@uses("provci")
def test_g07_attestation_with_lying_predicate_type_annotation_denied(
    world: World, signed_stack: Pullguard
) -> None:
    # The .att layer's unsigned predicateType annotation says SLSA v0.2;
    # the signed statement is a vulnerability report.
    signer = world.keys.ci
    att = crafted.lying_attestation(signer, world.name(), world.digest)
    oci.push_artifact(world.upstream.url, world.repo, oci.attestation_tag(world.digest), att)
    pg = signed_stack

    report = _provenance_denied(pg, world.repo, "source.provenance_missing")
    # The signed predicate type was read and reported, the annotation ignored.
    assert crafted.VULN_PREDICATE in json.dumps(report)


@uses("provci")
def test_g07_provenance_for_another_digest_denied(world: World, signed_stack: Pullguard) -> None:
    # Honest provenance of image B, by the trusted key, in image A's .att tag.
    signer = world.keys.ci
    statement = bundles.slsa_v02_statement("sha256:" + "cd" * 32, world.name(), BUILDER, SOURCE)
    att = crafted.provenance_attestation(signer, statement)
    oci.push_artifact(world.upstream.url, world.repo, oci.attestation_tag(world.digest), att)
    pg = signed_stack

    _provenance_denied(
        pg, world.repo, "source.provenance_missing", "source.provenance_subject_mismatch"
    )


# -- the fixtures themselves: what the real signers produced -------------------


def test_fixture_cosign_storage_forms(world: World) -> None:
    """The facts tests/support/signers documents, measured on this registry."""
    sign_tag(world.ref(), world.key("alice"))
    sign_referrer(world.ref(), world.key("alice"))
    sign_bundle(world.ref(), world.key("alice"))
    attest(world.ref(), world.key("alice"), slsa_v02_predicate(BUILDER, SOURCE))
    url, hexdigest = world.upstream.url, world.digest[7:]

    assert set(oci.tags(url, world.repo)) == {
        "v1",
        f"sha256-{hexdigest}.sig",
        f"sha256-{hexdigest}.att",
        f"sha256-{hexdigest}",
    }
    index = oci.read_artifact(url, world.repo, f"sha256-{hexdigest}")
    assert index is not None and index.media_type == oci.OCI_INDEX
    listed = {d["artifactType"]: d for d in index.document["manifests"]}
    assert set(listed) == {bundles.SIG_ARTIFACT_TYPE, bundles.BUNDLE_INDEX_ARTIFACT_TYPE}
    digests = [d["digest"] for d in index.document["manifests"]]
    assert digests == sorted(digests)  # kept sorted by digest, not in push order
    simple = oci.read_artifact(url, world.repo, listed[bundles.SIG_ARTIFACT_TYPE]["digest"])
    bundle = oci.read_artifact(
        url, world.repo, listed[bundles.BUNDLE_INDEX_ARTIFACT_TYPE]["digest"]
    )
    assert simple is not None and bundle is not None
    assert simple.document["subject"] == world.subject
    assert simple.document["config"]["mediaType"] == bundles.SIG_ARTIFACT_TYPE
    document = bundle.document
    assert document["artifactType"] == bundles.BUNDLE_V03
    assert document["subject"] == world.subject
    assert document["annotations"]["dev.sigstore.bundle.predicateType"] == (
        "https://sigstore.dev/cosign/sign/v1"
    )
    # The crafted form is byte-compatible in layout with cosign's own.
    (layer,) = document["layers"]
    ours = bundles.bundle_referrer(
        bundle.blobs[layer["digest"]],
        world.subject,
        created=document["annotations"]["org.opencontainers.image.created"],
    )
    assert ours.manifest == bundle.manifest
    att = oci.read_artifact(url, world.repo, oci.attestation_tag(world.digest))
    assert att is not None
    (att_layer,) = att.document["layers"]
    assert att_layer["mediaType"] == bundles.DSSE_MEDIA_TYPE
    assert att_layer["annotations"] == {
        "dev.cosignproject.cosign/signature": "",
        "predicateType": bundles.SLSA_V02,
    }


def test_fixture_keyless_bundles_verify_with_sigstore_python(
    tmp_path: Path, keyless_ready: None
) -> None:
    """The node-made bundles are real: sigstore-python verifies them offline."""
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    identity = workflow_identity("pullguard/app")
    manifest = b'{"schemaVersion":2}'
    statement = bundles.cosign_sign_statement(oci.sha256(manifest), "127.0.0.1:5000/signed/app")
    jobs = [
        KeylessJob("message", "message", identity, GITHUB_ISSUER, manifest),
        KeylessJob("dsse", "dsse", identity, GITHUB_ISSUER, statement),
        KeylessJob("v02", "dsse", identity, GITHUB_ISSUER, statement, bundle_version="0.2"),
    ]
    run = make_keyless(tmp_path / "run", jobs, tsa=True)
    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(run.trusted_root)))
    policy = Identity(identity=identity, issuer=GITHUB_ISSUER)

    assert run.bundle_json("message")["mediaType"] == bundles.BUNDLE_V03
    verifier.verify_artifact(manifest, Bundle.from_json(run.bundle("message")), policy)
    assert verifier.verify_dsse(Bundle.from_json(run.bundle("dsse")), policy)[1] == statement
    verifier.verify_dsse(Bundle.from_json(run.bundle("v02")), policy)
    other = make_keyless(tmp_path / "other", jobs[:1], tsa=True)
    foreign = Verifier(trusted_root=TrustedRoot.from_file(str(other.trusted_root)))
    with pytest.raises(VerificationError, match="chain"):
        foreign.verify_artifact(manifest, Bundle.from_json(run.bundle("message")), policy)


def test_fixture_crafted_forms_follow_cosign(world: World) -> None:
    """A crafted simple-signing referrer has the layout of cosign's oci-1-1 one."""
    sign_referrer(world.ref(), world.key("alice"))
    index = oci.read_artifact(world.upstream.url, world.repo, oci.fallback_tag(world.digest))
    assert index is not None
    real = oci.read_artifact(
        world.upstream.url,
        world.repo,
        index.document["manifests"][0]["digest"],
    )
    assert real is not None
    (layer,) = real.document["layers"]
    ours = bundles.simplesigning_referrer(
        [
            SignatureLayer(
                real.blobs[layer["digest"]], dict(layer["annotations"]), layer["mediaType"]
            )
        ],
        world.subject,
    )
    assert ours.manifest == real.manifest
    assert ours.blobs == dict(real.blobs)
