"""``pullguard verify-bundle``: check a sigstore bundle by hand, offline.

    pullguard verify-bundle --bundle FILE
        (--certificate-identity I --certificate-oidc-issuer U | --key K)
        [--trusted-root F] FILE_OR_DIGEST

The command-line shape of the sigstore conformance suite. FILE_OR_DIGEST is
the signed artifact, or its digest as ``sha256:<hex>``. The bundle is
verified with the same code this layer uses for bundles it finds
on images (``bundles.py`` beside it): a certificate bundle must be
issued to exactly that identity by that issuer, under the trusted root (by
default the Sigstore production root shipped with the ``sigstore`` package;
nothing is fetched); a key bundle must verify under the key. A DSSE bundle's
statement must list the artifact's digest.

Exit status: 0 valid; 1 invalid (the reason is printed on stderr), including
unusable trust material (a key or trusted root that does not parse); 2 usage
(missing or conflicting options, an unreadable file).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pullguard.services.runtime.digests import digest_bytes
from pullguard.services.signature import bundles
from pullguard.services.signature.backend import BundleFailure
from pullguard.services.signature.identity import IdentityConfigError, KeylessSigner
from pullguard.services.signature.keys import TrustedKey, TrustMaterialError, load_key
from pullguard.services.signature.trust import Trust
from pullguard.services.signature.trustroot import TrustRootError, parse_trust_root

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
#: Largest bundle, trusted root, key or artifact read.
MAX_INPUT_BYTES = 64 * 1024 * 1024

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"verify-bundle: {message}", file=sys.stderr)
        raise _UsageError


class _UsageError(Exception):
    pass


def build_parser(prog: str = "pullguard verify-bundle") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Verify a sigstore bundle offline.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments (also used for the ``pullguard`` subparser)."""
    parser.add_argument("--bundle", required=True, help="the bundle (sigstore JSON)")
    parser.add_argument("--certificate-identity", help="expected certificate subject (SAN)")
    parser.add_argument("--certificate-oidc-issuer", help="expected OIDC issuer")
    parser.add_argument("--key", help="PEM public key, for a bundle signed with a key")
    parser.add_argument("--trusted-root", help="trusted_root.json (default: Sigstore production)")
    parser.add_argument("artifact", metavar="FILE_OR_DIGEST", help="the artifact or sha256:<hex>")


def verify_bundle_main(argv: Sequence[str]) -> int:
    """Run the command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except _UsageError:
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return EXIT_VALID if exc.code in (0, None) else EXIT_USAGE
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Verify with parsed arguments (shared with ``gateway.cli``)."""
    keyless = args.certificate_identity is not None or args.certificate_oidc_issuer is not None
    if args.key is not None and keyless:
        return _usage("give either --key or --certificate-identity with --certificate-oidc-issuer")
    if args.key is None and not (args.certificate_identity and args.certificate_oidc_issuer):
        return _usage("give --key, or both --certificate-identity and --certificate-oidc-issuer")
    try:
        data = _read(args.bundle, "bundle")
        trust = _trust(args)
        artifact = _artifact(args.artifact)
    except _InputError as exc:
        print(f"verify-bundle: {exc}", file=sys.stderr)
        return EXIT_INVALID if exc.invalid else EXIT_USAGE
    try:
        verified = bundles.verify_bundle(data, artifact, trust)
    except bundles.BundleRejected as exc:
        print(f"INVALID {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    what = "statement" if verified.kind == "dsse" else "message signature"
    tlog = f", {verified.tlog}" if verified.tlog else ""
    print(f"OK: {what} over {artifact.digest} signed by {verified.signer}{tlog}")
    return EXIT_VALID


class _InputError(Exception):
    def __init__(self, message: str, invalid: bool = False) -> None:
        super().__init__(message)
        self.invalid = invalid


def _usage(message: str) -> int:
    build_parser().print_usage(sys.stderr)
    print(f"verify-bundle: {message}", file=sys.stderr)
    return EXIT_USAGE


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise _InputError(f"{what} {path} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _trust(args: argparse.Namespace) -> Trust:
    # The adapter is imported here so that `pullguard --help` does not load sigstore.
    from pullguard.services.signature.sigstore_adapter import SigstoreTrust, production_trust_root

    root_text = (
        _read(args.trusted_root, "trusted root") if args.trusted_root else production_trust_root()
    )
    try:
        root = parse_trust_root(root_text)
        backend = SigstoreTrust(root_text)
    except (TrustRootError, BundleFailure) as exc:
        raise _InputError(f"INVALID trusted root: {exc}", invalid=True) from None
    keys: tuple[TrustedKey, ...] = ()
    signers: tuple[KeylessSigner, ...] = ()
    try:
        if args.key is not None:
            pem = _read(args.key, "key").decode("utf-8", errors="replace")
            keys = (load_key(Path(args.key).name, pem),)
        else:
            signers = (
                KeylessSigner.create(
                    args.certificate_oidc_issuer, subject=args.certificate_identity
                ),
            )
    except (TrustMaterialError, IdentityConfigError) as exc:
        raise _InputError(f"INVALID trust material: {exc}", invalid=True) from None
    return Trust(
        keys=keys,
        keyless=signers,
        root=root,
        rekor_required=False,
        now=datetime.now(UTC),
        bundles=backend,
    )


def _artifact(value: str) -> bundles.ArtifactRef:
    if _DIGEST.fullmatch(value):
        return bundles.ArtifactRef(value)
    if value.startswith("sha256:"):
        raise _InputError(f"{value[:80]!r} is not sha256:<64 lowercase hex digits>")
    content = _read(value, "artifact")
    return bundles.ArtifactRef(digest_bytes(content), content)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(verify_bundle_main(sys.argv[1:]))
