"""``pullguard verify-bundle`` against every case of the sigstore conformance suite.

Each folder of tests/data/conformance/sigstore-bundle-verify runs through
``verify_bundle_main`` with the suite's CLI protocol: cases named ``*_fail``
must exit 1, all others 0. Defaults follow that folder's README: the
artifact is ``a.txt`` unless the case has its own, the identity and issuer
are the suite's beacon workflow unless given, ``key.pub`` selects key
verification, and a case without ``trusted_root.json`` uses the Sigstore
production root shipped with sigstore-python, offline. Every case also runs
with the artifact given as ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from pullguard.services.signature.verify_bundle import verify_bundle_main
from tests.support.shared import DATA, conformance

SUITE = DATA / "conformance" / "sigstore-bundle-verify"
DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"
CASES = sorted(p.name for p in SUITE.iterdir() if p.is_dir()) if SUITE.is_dir() else []


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may connect anywhere while a bundle is verified."""
    conformance("sigstore-bundle-verify")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("verify-bundle tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def arguments(case: Path, by_digest: bool) -> list[str]:
    argv = ["--bundle", str(case / "bundle.sigstore.json")]
    if (case / "key.pub").exists():
        argv += ["--key", str(case / "key.pub")]
    else:
        identity = case / "identity"
        issuer = case / "issuer"
        argv += [
            "--certificate-identity",
            identity.read_text().strip() if identity.exists() else DEFAULT_IDENTITY,
            "--certificate-oidc-issuer",
            issuer.read_text().strip() if issuer.exists() else DEFAULT_ISSUER,
        ]
    if (case / "trusted_root.json").exists():
        argv += ["--trusted-root", str(case / "trusted_root.json")]
    artifact = case / "artifact" if (case / "artifact").exists() else SUITE / "a.txt"
    if by_digest:
        argv.append("sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest())
    else:
        argv.append(str(artifact))
    return argv


def test_the_suite_is_complete() -> None:
    assert len(CASES) == 70
    assert sum(name.endswith("_fail") for name in CASES) == 49


@pytest.mark.parametrize("by_digest", [False, True], ids=["file", "digest"])
@pytest.mark.parametrize("name", CASES)
def test_conformance_case(name: str, by_digest: bool, capsys: pytest.CaptureFixture[str]) -> None:
    status = verify_bundle_main(arguments(SUITE / name, by_digest))
    output = capsys.readouterr()
    expected = 1 if name.endswith("_fail") else 0
    assert status == expected, output.err + output.out
    if expected:
        assert output.err.strip(), "a failure must say why"
    else:
        assert output.out.startswith("OK: ")


def test_valid_bundle_against_another_artifact_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "b.txt"
    other.write_bytes(b"not the signed artifact\n")
    argv = arguments(SUITE / "happy-path-v0.3", False)[:-1] + [str(other)]
    assert verify_bundle_main(argv) == 1
    assert "signature.wrong_digest" in capsys.readouterr().err


def test_wrong_identity_fails_with_the_identity_named(capsys: pytest.CaptureFixture[str]) -> None:
    argv = arguments(SUITE / "happy-path-v0.3", False)
    argv[argv.index("--certificate-identity") + 1] = "https://github.com/attacker/x"
    assert verify_bundle_main(argv) == 1
    err = capsys.readouterr().err
    assert "signature.wrong_identity" in err and DEFAULT_IDENTITY in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--bundle", "b.json", "a.txt"],
        ["--bundle", "b.json", "--certificate-identity", "i", "a.txt"],
        ["--bundle", "b.json", "--key", "k", "--certificate-identity", "i", "a.txt"],
        ["--bundle", "b.json", "--key", "k"],
        ["--bundle", "b.json", "--unknown", "a.txt"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_bundle_main(argv) == 2
    assert "verify-bundle" in capsys.readouterr().err


def test_unreadable_files_are_usage_errors(tmp_path: Path) -> None:
    key = SUITE / "managed-key-happy-path" / "key.pub"
    argv = ["--bundle", str(tmp_path / "absent.json"), "--key", str(key), str(SUITE / "a.txt")]
    assert verify_bundle_main(argv) == 2


def test_malformed_digest_argument_is_a_usage_error() -> None:
    argv = arguments(SUITE / "happy-path-v0.3", False)[:-1] + ["sha256:ABC"]
    assert verify_bundle_main(argv) == 2
