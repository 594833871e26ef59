"""The ``pullguard`` command.

Exit codes: 0 allowed / success, 1 denied, 2 error (bad configuration, bad
arguments, a service that could not be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from pullguard.services.runtime.config import LAYERS, SERVICES, Config, load_config
from pullguard.services.runtime.errors import ConfigError, PullguardError
from pullguard.services.runtime.main import configure_logging, run_service

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullguard", description="An image firewall for container registries."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start every service and the gateway; Ctrl-C stops them")
    up.add_argument("--config")
    up.add_argument(
        "--no-restart",
        action="store_true",
        help="leave a layer that dies down (its pulls are outages) instead of restarting it",
    )

    serve = sub.add_parser("serve", help="run one service alone")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--listen", required=True, metavar="HOST:PORT")
    serve.add_argument("--config")
    serve.add_argument("--grpc-listen", metavar="HOST:PORT", help="gateway only: its gRPC address")
    serve.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help="layers only: a plaintext port answering health checks alone (for probes)",
    )
    serve.add_argument(
        "--service",
        action="append",
        default=[],
        dest="services",
        metavar="LAYER=HOST:PORT",
        help="gateway only: where a layer listens",
    )

    for name, text in (
        ("check", "run every layer on REF without admitting it"),
        ("admit", "run every layer on REF and admit it when it passes"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("ref", metavar="REF", help="<alias>/<repository>[:tag|@digest]")
        command.add_argument("--config")
        command.add_argument("--json", action="store_true")

    reevaluate = sub.add_parser(
        "reevaluate",
        help="verify every admitted image again under the current policy; revoke failures",
    )
    reevaluate.add_argument("--config")
    reevaluate.add_argument("--json", action="store_true")
    reevaluate.add_argument(
        "--force", action="store_true", help="also images admitted under the current policy"
    )
    reevaluate.add_argument("--limit", type=int, default=10_000, help="at most N images")
    reevaluate.add_argument(
        "--deadline", type=float, default=3600.0, help="give up after SECONDS (default 3600)"
    )

    decisions = sub.add_parser("decisions", help="list recorded decisions, newest first")
    decisions.add_argument("--config")
    decisions.add_argument("--json", action="store_true")
    decisions.add_argument("--limit", type=int, default=50)

    quarantine = sub.add_parser(
        "quarantine", help="inspect the quarantine; release or delete an entry"
    )
    quarantine.add_argument("action", choices=("list", "show", "release", "delete"))
    quarantine.add_argument("id", nargs="?")
    quarantine.add_argument(
        "--reason", help="release only: why the waived findings are acceptable (recorded)"
    )
    quarantine.add_argument("--config")
    quarantine.add_argument("--json", action="store_true")

    fsck = sub.add_parser(
        "fsck",
        help="hash every admitted file; check the database, audit log and layout"
        " (exit 0 clean, 1 problems found, 2 error)",
    )
    fsck.add_argument("--config")
    fsck.add_argument("--json", action="store_true")
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="move damaged files to state_dir/damaged/, withdraw admissions that lost content,"
        " fix the layout (stop the gateway first)",
    )

    policy = sub.add_parser("policy", help="policy tools")
    policy.add_argument("action", choices=("validate",))
    policy.add_argument("file")

    from pullguard.gateway import verify_bundle

    verify_bundle.add_arguments(
        sub.add_parser(
            "verify-bundle", help="verify a sigstore bundle offline (exit 0 valid, 1 invalid)"
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"pullguard: configuration error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PullguardError as exc:
        print(f"pullguard: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "verify-bundle":
        from pullguard.gateway.verify_bundle import run

        return run(args)
    if args.command == "policy":
        config = load_config(args.file)
        print(
            f"{args.file}: valid ({len(config.policy.rules)} rules, policy {config.policy_version})"
        )
        return EXIT_OK
    config = load_config(args.config)
    if args.command == "up":
        from pullguard.gateway.supervisor import run_up

        configure_logging()
        return run_up(config, args.config, restart=not args.no_restart)
    if args.command == "serve":
        return _serve(args, config)
    if args.command in ("check", "admit"):
        return _check(args, config)
    if args.command == "decisions":
        return _decisions(args, config)
    if args.command == "reevaluate":
        return _reevaluate(args, config)
    if args.command == "fsck":
        from pullguard.gateway import fsck

        return fsck.run(config.state_dir, repair=args.repair, as_json=args.json)
    return _quarantine(args, config)


def _serve(args: argparse.Namespace, config: Config) -> int:
    configure_logging()
    if args.service == "gateway":
        from dataclasses import replace

        from pullguard.gateway.app import serve_gateway

        services = {}
        for item in args.services:
            layer, _, address = item.partition("=")
            if layer not in LAYERS or not address:
                raise PullguardError(f"--service wants LAYER=HOST:PORT, got {item!r}")
            services[layer] = address
        config = replace(
            config.with_services(services),
            listen=args.listen,
            grpc_listen=args.grpc_listen or config.grpc_listen,
        )
        from pullguard.services.runtime.telemetry import setup_telemetry

        setup_telemetry(config.telemetry, "gateway")
        asyncio.run(serve_gateway(config))
        return EXIT_OK
    import importlib

    servicer = importlib.import_module(f"pullguard.services.{args.service}.servicer")
    return run_service(args.service, servicer.register, config, args.listen, args.health_listen)


def _check(args: argparse.Namespace, config: Config) -> int:
    from pullguard.v1 import gateway_pb2

    def call(stub: Any) -> Any:
        method = stub.Admit if args.command == "admit" else stub.Check
        return method(
            gateway_pb2.CheckRequest(reference=args.ref),
            timeout=config.limits.blob_deadline + 60,
        )

    return _report_outcome(args, _with_gateway(args, config, call))


class _Refused(Exception):
    """The gateway refused the request itself (FAILED_PRECONDITION)."""


def _with_gateway(args: argparse.Namespace, config: Config, call: Any) -> Any:
    """Call the running gateway, or a private stack started for this command."""
    from pullguard.gateway.supervisor import ephemeral_stack, running_gateway
    from pullguard.v1 import gateway_pb2_grpc

    stack = None
    address = running_gateway(config)
    if address is None:
        stack = ephemeral_stack(config, args.config)
        address = stack.grpc_listen
    try:
        with grpc.insecure_channel(address) as channel:
            try:
                return call(gateway_pb2_grpc.GatewayStub(channel))
            except grpc.RpcError as exc:
                details = exc.details()  # type: ignore[attr-defined]
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                    raise _Refused(details) from None
                raise PullguardError(
                    details if details.startswith("gateway:") else f"gateway: {details}"
                ) from None
    finally:
        if stack is not None:
            stack.stop()


def _report_outcome(args: argparse.Namespace, report: Any) -> int:
    data = json.loads(report.report_json)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        _print_report(data)
    if data.get("transient"):
        return EXIT_ERROR
    return EXIT_OK if data["decision"] == "ALLOW" else EXIT_DENIED


def _print_report(report: dict[str, Any]) -> None:
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


def _decisions(args: argparse.Namespace, config: Config) -> int:
    from pullguard.gateway.decisions import DecisionLog

    log = DecisionLog(config.state_dir)
    try:
        rows = log.list_decisions(max(1, min(args.limit, 10000)))
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


def _quarantine(args: argparse.Namespace, config: Config) -> int:
    from pullguard.gateway.decisions import DecisionLog
    from pullguard.gateway.stores import Quarantine

    log = DecisionLog(config.state_dir)
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
            return _release(args, config)
        quarantine.delete(args.id)
        log.forget_quarantine(args.id)
        print(f"deleted quarantine entry {args.id}")
        return EXIT_OK
    finally:
        log.close()


def _reevaluate(args: argparse.Namespace, config: Config) -> int:
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
        for image in _with_gateway(args, config, call).images
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


def _release(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 released, 1 refused (not waivable, or denied again), 2 error."""
    import getpass

    from pullguard.gateway.release import check_reason
    from pullguard.v1 import gateway_pb2

    reason = check_reason(args.reason or "")
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
        report = _with_gateway(args, config, call)
    except _Refused as exc:
        print(f"pullguard: release refused: {exc}", file=sys.stderr)
        return EXIT_DENIED
    outcome = _report_outcome(args, report)
    if outcome == EXIT_OK and not args.json:
        print(f"released quarantine entry {args.id}")
    return outcome


if __name__ == "__main__":
    raise SystemExit(main())
