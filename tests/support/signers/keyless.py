"""Real keyless sigstore bundles, made offline by node/keyless.js.

@sigstore/sign signs as it does against the public instance (ephemeral key,
Fulcio certificate for an OIDC identity, Rekor entry with SET and inclusion
proof, optionally an RFC 3161 timestamp); @sigstore/mock plays Fulcio, its
CT log, Rekor and a TSA inside the node process (nock answers for
``*.pullguard.test`` and refuses every other connection). One
:func:`make_keyless` run is one fresh test instance: its
``trusted_root.json`` verifies that run's bundles and no other run's, so
a second run is a foreign CA.

The node packages are installed by ``scripts/install-node-test-deps.sh``
(``npm ci`` from the committed lock file) into ``node/node_modules``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "keyless.js"
INSTALL_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "install-node-test-deps.sh"
#: Seconds one generator run may take, and how many runs are tried.
TIMEOUT = 20
ATTEMPTS = 3

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


@dataclass(frozen=True)
class KeylessJob:
    """One bundle to make: ``message`` signs the bytes, ``dsse`` wraps them in an envelope."""

    name: str
    kind: str  # "message" or "dsse"
    identity: str  # the certificate's SAN (the token's sub)
    issuer: str  # the OIDC issuer written into the certificate
    payload: bytes
    payload_type: str = "application/vnd.in-toto+json"
    bundle_version: str = "0.3"


@dataclass(frozen=True)
class KeylessRun:
    """The output of one run: its trusted root and one bundle per job."""

    directory: Path
    trusted_root: Path
    bundles: dict[str, Path] = field(default_factory=dict)

    def bundle(self, name: str) -> bytes:
        return self.bundles[name].read_bytes()

    def bundle_json(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.bundle(name)))

    def ca_certificates(self) -> list[bytes]:
        """DER of the run's Fulcio CA certificates (the chain, root last)."""
        root = json.loads(self.trusted_root.read_text())
        chain = root["certificateAuthorities"][0]["certChain"]["certificates"]
        return [base64.b64decode(c["rawBytes"]) for c in chain]


def node_binary() -> str | None:
    return shutil.which("node")


def node_ready() -> bool:
    """node is installed and so are the packages keyless.js needs."""
    return node_binary() is not None and (NODE_DIR / "node_modules" / "@sigstore" / "sign").is_dir()


def make_keyless(directory: Path, jobs: Sequence[KeylessJob], tsa: bool = False) -> KeylessRun:
    """Run node/keyless.js for ``jobs``; bundles and trusted root go to ``directory``."""
    node = node_binary()
    if node is None or not node_ready():
        raise RuntimeError(
            f"node or its packages are missing: run {INSTALL_SCRIPT} (make system-deps does)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "out_dir": str(directory),
        "tsa": tsa,
        "jobs": [
            {
                "name": job.name,
                "kind": job.kind,
                "identity": job.identity,
                "issuer": job.issuer,
                "payload_b64": base64.b64encode(job.payload).decode(),
                "payload_type": job.payload_type,
                "bundle_version": job.bundle_version,
            }
            for job in jobs
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
        spec_path = handle.name
    try:
        # No proxy variables: nock answers in-process, and refuses the rest.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)}
        result = _run_node([node, str(SCRIPT), spec_path], env)
    finally:
        os.unlink(spec_path)
    if result.returncode != 0:
        raise RuntimeError(f"keyless.js failed ({result.returncode}): {result.stderr[-3000:]}")
    return KeylessRun(
        directory,
        directory / "trusted_root.json",
        {job.name: directory / f"{job.name}.sigstore.json" for job in jobs},
    )


def _run_node(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the generator; a run takes well under a second.

    Rarely (seen once in about a hundred runs) the mock's in-process servers
    leave a promise unresolved and node idles forever. A fresh process does
    not, so a hung run is retried a bounded number of times. This only makes
    test fixtures; nothing verified depends on the retry.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return subprocess.run(
                command,
                cwd=NODE_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def workflow_identity(
    repository: str, workflow: str = "release.yml", ref: str = "refs/heads/main"
) -> str:
    """A GitHub Actions certificate identity (the SAN Fulcio writes for a workflow)."""
    return f"https://github.com/{repository}/.github/workflows/{workflow}@{ref}"
