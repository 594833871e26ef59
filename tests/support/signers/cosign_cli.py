"""The real cosign 2.5, offline, in every storage form it can write.

Each run gets a fresh ``HOME`` and proxies pointing at a closed local port
(see :func:`tests.support.cosign._environment`): cosign reaches the
registry on 127.0.0.1 and nothing else (no Rekor, no TUF). Keys come from
:func:`tests.support.cosign.generate_key_pair`. What each form stores is
described in :mod:`tests.support.signers`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.cosign import COSIGN_PASSWORD, TIMEOUT, cosign_binary

#: cosign v3's predicate type for an image signature in bundle form.
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def run_cosign(arguments: Sequence[str], extra_env: Mapping[str, str] | None = None) -> str:
    """Run cosign offline with ``extra_env`` added; returns its output, raises on failure."""
    binary = cosign_binary()
    if binary is None:
        raise RuntimeError("cosign not found: run `make system-deps`")
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves
    with tempfile.TemporaryDirectory(prefix="cosign-home-") as home:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": home,
            "COSIGN_PASSWORD": COSIGN_PASSWORD,
            "HTTP_PROXY": closed,
            "HTTPS_PROXY": closed,
            "NO_PROXY": "127.0.0.1,localhost",
            "TUF_ROOT": str(Path(home) / ".sigstore" / "root"),
            **(extra_env or {}),
        }
        result = subprocess.run(
            [str(binary), *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"cosign {arguments[0]} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return result.stdout + result.stderr


def _by_digest(reference: str) -> str:
    if "@sha256:" not in reference:
        raise ValueError(f"sign by digest (HOST:PORT/REPO@sha256:...), got {reference!r}")
    return reference


def sign_tag(reference: str, key: Path, repository: str | None = None) -> None:
    """``cosign sign --key``: the ``sha256-<hex>.sig`` tag.

    ``repository`` (``HOST:PORT/REPO``) is ``COSIGN_REPOSITORY``: the
    signature goes there instead of next to the image.
    """
    extra = {"COSIGN_REPOSITORY": repository} if repository else None
    run_cosign(
        ["sign", "-y", "--key", str(key), "--tlog-upload=false", "--allow-http-registry"]
        + [_by_digest(reference)],
        extra,
    )


def sign_referrer(reference: str, key: Path, identity: str | None = None) -> None:
    """``cosign sign --registry-referrers-mode=oci-1-1``: a referrer, no ``.sig`` tag.

    On a registry without the referrers API the referrer is listed in the
    ``sha256-<hex>`` fallback index. ``identity`` is
    ``--sign-container-identity`` (the payload's docker-reference).
    """
    arguments = ["sign", "-y", "--key", str(key), "--tlog-upload=false", "--allow-http-registry"]
    arguments.append("--registry-referrers-mode=oci-1-1")
    if identity:
        arguments += ["--sign-container-identity", identity]
    run_cosign([*arguments, _by_digest(reference)], {"COSIGN_EXPERIMENTAL": "1"})


def attest(
    reference: str,
    key: Path,
    predicate: Mapping[str, object],
    predicate_type: str = "slsaprovenance",
    new_bundle_format: bool = False,
) -> None:
    """``cosign attest --key --type T --predicate F``.

    Without ``new_bundle_format``: a DSSE layer in the ``sha256-<hex>.att``
    tag. With it: a sigstore bundle v0.3 referrer (fallback index here).
    """
    with tempfile.TemporaryDirectory(prefix="cosign-predicate-") as folder:
        path = Path(folder) / "predicate.json"
        path.write_text(json.dumps(predicate))
        arguments = [
            "attest",
            "-y",
            "--key",
            str(key),
            "--tlog-upload=false",
            "--allow-http-registry",
            "--type",
            predicate_type,
            "--predicate",
            str(path),
        ]
        if new_bundle_format:
            arguments.append("--new-bundle-format")
        run_cosign([*arguments, _by_digest(reference)])


def sign_bundle(reference: str, key: Path) -> None:
    """An image signature as cosign v3 stores it, made by cosign 2.5.

    cosign v3's ``sign`` writes a sigstore bundle referrer holding a DSSE
    in-toto statement with predicateType ``https://sigstore.dev/cosign/sign/v1``
    and an empty predicate; cosign 2.5's ``sign`` cannot, but its ``attest
    --new-bundle-format`` with that type writes the same shape (statement
    v0.1 instead of v1, the subject with a name).
    """
    attest(reference, key, {}, COSIGN_SIGN_PREDICATE, new_bundle_format=True)


def slsa_v02_predicate(builder_id: str, source: str, commit: str = "0" * 40) -> dict[str, object]:
    """A SLSA v0.2 predicate (``--type slsaprovenance``) naming ``builder_id`` and ``source``."""
    uri = f"git+{source}@refs/heads/main"
    return {
        "builder": {"id": builder_id},
        "buildType": "https://pullguard.test/build/v1",
        "invocation": {
            "configSource": {"uri": uri, "digest": {"sha1": commit}, "entryPoint": "build.yaml"}
        },
        "materials": [{"uri": uri, "digest": {"sha1": commit}}],
    }
