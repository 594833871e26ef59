"""The commands that ask the gateway: check, admit, decisions, quarantine, reevaluate.

Each runs against the running gateway's gRPC service, or a private stack
started for the command (:func:`with_gateway`), and prints the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from pullguard.gateway.cli import (
    DECISIONS_MAX,
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_OK,
    _config_path,
    _say_which_config,
    _silence_stdout,
)
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import PullguardError


def check(args: argparse.Namespace, config: Config) -> int:
    from pullguard.gateway.refs import check_reference_syntax
    from pullguard.v1 import gateway_pb2

    check_reference_syntax(args.ref, config)

    def call(stub: Any) -> Any:
        method = stub.Admit if args.command == "admit" else stub.Check
        return method(
            gateway_pb2.CheckRequest(reference=args.ref),
            timeout=config.limits.blob_deadline + 60,
        )

    return report_outcome(args, with_gateway(args, config, call))


class Refused(Exception):
    """The gateway refused the request itself (FAILED_PRECONDITION)."""


def with_gateway(args: argparse.Namespace, config: Config, call: Any) -> Any:
    """Call the running gateway, or a private stack started for this command."""
    from pullguard.gateway.auth.client import with_token
    from pullguard.gateway.supervisor import ephemeral_stack, running_gateway
    from pullguard.v1 import gateway_pb2_grpc

    stack = None
    address = running_gateway(config)
    if address is None:
        _say_which_config(args, config)
        stack = ephemeral_stack(config, _config_path(args))
        address = stack.grpc_listen
    try:
        with grpc.insecure_channel(address) as channel:
            try:
                return call(gateway_pb2_grpc.GatewayStub(with_token(channel)))
            except grpc.RpcError as exc:
                details = exc.details()  # type: ignore[attr-defined]
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                    raise Refused(details) from None
                raise PullguardError(
                    details if details.startswith("gateway:") else f"gateway: {details}"
                ) from None
    finally:
        if stack is not None:
            stack.stop()


def report_outcome(args: argparse.Namespace, report: Any) -> int:
    data = json.loads(report.report_json)
    if data.get("transient"):
        code = EXIT_ERROR
    else:
        code = EXIT_OK if data["decision"] == "ALLOW" else EXIT_DENIED
    try:
        if args.json:
            print(json.dumps(data, indent=2, sort_keys=True))
        else:
            print_report(data)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()  # the verdict stands though the reader stopped reading
    return code


def print_report(report: dict[str, Any]) -> None:
    outage = report.get("outage")
    print(
        f"{report['reference']}: {report['decision']}"
        + (
            f" ({outage['kind']} of {outage['layer']}; no verdict, retry): {report['reason']}"
            if outage
            else f" by {report['denied_by']}: {report['reason']}"
            if report["decision"] != "ALLOW"
            else ""
        )
    )
    print(f"  decision  {report['decision_id']}   policy {report['policy_version']}")
    if report.get("digest"):
        print(f"  digest    {report['digest']}")
    if report.get("user"):
        print(f"  user      {report['user']}")
    if report.get("cached"):
        print("  (admitted earlier under this policy; not verified again)")
    release = report.get("release")
    if release:
        print(
            f"  release   of quarantine entry {release['quarantine_id']} by"
            f" {release['operator']}: {release['reason']}"
        )
    for step in report["layers"]:
        timing = f"{step['duration_ms']:>8.1f} ms"
        error = f"  {step['error']}" if step["error"] else ""
        print(f"  {step['layer']:<10} {step['step']:<14} {step['decision']:<5} {timing}{error}")
        for finding in step["findings"]:
            severity = "WAIVED" if finding.get("waived") else finding["severity"]
            print(f"      {severity:<7} {finding['code']}: {finding['message']}")
    for sig in report.get("signatures", []):
        state = "accepted" if sig["accepted"] else "rejected"
        signer = sig["signer"] or "-"
        print(f"  signature {sig['location']}: {state}; signer {signer}; {sig['reason']}")


def decisions(args: argparse.Namespace, config: Config) -> int:
    from pullguard.gateway.decisions import DecisionLog

    if not 1 <= args.limit <= DECISIONS_MAX:
        raise PullguardError(f"--limit wants 1 to {DECISIONS_MAX}, got {args.limit}")
    log = DecisionLog(config.state_dir, config.database)
    try:
        rows = log.list_decisions(args.limit)
    finally:
        log.close()
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    for row in rows:
        outcome = row["decision"] + (
            f" by {row['denied_by']}" if row["decision"] != "ALLOW" else ""
        )
        if row.get("outage"):
            outcome = f"outage of {row['outage']['layer']}"
        digest = row.get("digest", "")
        print(f"{row['time']}  {row['decision_id']}  {outcome:<20} {row['reference']}  {digest}")
    return EXIT_OK


def quarantine(args: argparse.Namespace, config: Config) -> int:
    from pullguard.gateway.decisions import DecisionLog
    from pullguard.gateway.stores import Quarantine

    log = DecisionLog(config.state_dir, config.database)
    quarantine = Quarantine(config.state_dir / "quarantine")
    try:
        if args.action == "list":
            entries = log.list_quarantine()
            if args.json:
                print(json.dumps(entries, indent=2))
            for entry in entries if not args.json else ():
                print(f"{entry['time']}  {entry['id']}  {entry['reference']}  {entry['reason']}")
            return EXIT_OK
        if not args.id:
            raise PullguardError(f"quarantine {args.action} needs an ID")
        if args.reason is not None and args.action != "release":
            raise PullguardError("--reason goes with quarantine release only")
        if args.action == "show":
            print(quarantine.report(args.id))
            return EXIT_OK
        if args.action == "release":
            return release(args, config)
        from pullguard.gateway.operations import delete_entry

        delete_entry(log, quarantine, args.id)
        print(f"deleted quarantine entry {args.id}")
        return EXIT_OK
    finally:
        log.close()


def reevaluate(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 every image still admitted, 1 some revoked, 2 some undecided, a revoked
    image the registry target still holds, or an error."""
    from pullguard.v1 import gateway_pb2

    if not 1 <= args.limit <= 100_000:
        raise PullguardError(f"--limit wants 1 to 100000, got {args.limit}")
    if not 1 <= args.deadline <= 7 * 24 * 3600:
        raise PullguardError(f"--deadline wants 1 to 604800 seconds, got {args.deadline}")

    def call(stub: Any) -> Any:
        return stub.Reevaluate(
            gateway_pb2.ReevaluateRequest(force=args.force, limit=args.limit),
            timeout=args.deadline,
        )

    fields = gateway_pb2.ReevaluatedImage.DESCRIPTOR.fields_by_name
    images = [
        {name: str(getattr(image, name)) for name in fields}
        for image in with_gateway(args, config, call).images
    ]
    if args.json:
        print(json.dumps(images, indent=2, sort_keys=True))
    for image in images if not args.json else ():
        line = f"{image['outcome']:<10} {image['repository']}@{image['digest']}"
        if image["outcome"] in ("revoked", "undecided"):
            line += f"  {image['denied_by']}: {image['reason']}"
        if image["target"]:
            line += f"  [target {image['target']}]"
        print(f"{line}  (decision {image['decision_id']})")
    outcomes = {image["outcome"] for image in images}
    # A revoked image the target still serves needs an operator: an error.
    if "undecided" in outcomes or any(i["target"].startswith("failed") for i in images):
        return EXIT_ERROR
    return EXIT_DENIED if "revoked" in outcomes else EXIT_OK


def release(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 released, 1 refused (not waivable, or denied again), 2 error."""
    import getpass

    from pullguard.gateway.auth.client import token_from_environment
    from pullguard.gateway.release import check_reason
    from pullguard.v1 import gateway_pb2

    reason = check_reason(args.reason or "")
    operator = ""  # with a token, the gateway records the token's name
    if token_from_environment() is None:
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):
            operator = "unknown"

    def call(stub: Any) -> Any:
        return stub.ReleaseQuarantine(
            gateway_pb2.ReleaseQuarantineRequest(id=args.id, reason=reason, operator=operator),
            timeout=config.limits.blob_deadline + 60,
        )

    try:
        report = with_gateway(args, config, call)
    except Refused as exc:
        print(f"pullguard: release refused: {exc}", file=sys.stderr)
        return EXIT_DENIED
    outcome = report_outcome(args, report)
    if outcome == EXIT_OK and not args.json:
        print(f"released quarantine entry {args.id}")
    return outcome
