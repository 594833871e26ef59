"""The ``pullguard`` command.

Exit codes: 0 allowed / success, 1 denied, 2 error (bad configuration, bad
arguments, a service that could not be reached). No traceback reaches the
user: every failure is one line on stderr naming what and where.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from pullguard.services.runtime.config import (
    LAYERS,
    SERVICES,
    Config,
    ConfigErrors,
    ConfigUnreadable,
    load_config,
)
from pullguard.services.runtime.config.settings import is_replicated
from pullguard.services.runtime.errors import ConfigError, PullguardError
from pullguard.services.runtime.logs import configure_logging
from pullguard.services.runtime.main import run_service

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2

#: Where the configuration is when ``--config`` is not given.
CONFIG_ENV = "PULLGUARD_CONFIG"

_CONFIG_HELP = f"the configuration file (default: ${CONFIG_ENV}, else the built-in default)"
_EXITS = {
    "main": "exit status: 0 success, 1 denied or invalid, 2 error (usage, configuration,"
    " a service that could not be reached); each command's --help says more",
    "up": "exit status: 0 stopped cleanly, 1 the gateway died (the layers were stopped with it;"
    " a layer that dies is restarted unless --no-restart), 2 error (configuration, an address"
    " already in use, a service that did not start)",
    "serve": "exit status: 0 stopped cleanly, 2 error (configuration, an address already in use)",
    "check": "exit status: 0 allowed, 1 denied, 2 error or outage (a malformed REF, a"
    " configuration error, a layer or upstream that could not answer); retry on 2",
    "reevaluate": "exit status: 0 every image still admitted, 1 some revoked, 2 some undecided,"
    " a revoked image the registry target still holds, or an error",
    "decisions": "exit status: 0 listed, 2 error (usage, configuration, unreadable state)",
    "quarantine": "exit status: 0 done, 1 release refused (not waivable, or denied again),"
    " 2 error (unknown ID, usage, configuration)",
    "policy": "exit status: 0 valid (warnings are printed but allowed, unless --strict),"
    " 1 invalid (or warnings under --strict), 2 the file cannot be read or a usage error",
    "verify-bundle": "exit status: 0 valid, 1 invalid, 2 usage error",
    "gc": "exit status: 0 done (or nothing to do), 2 error (configuration, unreadable state)",
    "vulndb": "exit status: 0 done, 1 an ecosystem could not be synced (the database keeps"
    " what it had), 2 error (a refused archive, configuration, usage)",
}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pullguard")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullguard",
        description="An image firewall for container registries.",
        epilog=_EXITS["main"],
    )
    parser.add_argument("--version", action="version", version=f"pullguard {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", help="start every service and the gateway; Ctrl-C stops them", epilog=_EXITS["up"]
    )
    up.add_argument("--config", help=_CONFIG_HELP)
    up.add_argument(
        "--no-restart",
        action="store_true",
        help="leave a layer that dies down (its pulls are outages) instead of restarting it",
    )

    serve = sub.add_parser("serve", help="run one service alone", epilog=_EXITS["serve"])
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--listen", required=True, metavar="HOST:PORT")
    serve.add_argument("--config", help=_CONFIG_HELP)
    serve.add_argument("--grpc-listen", metavar="HOST:PORT", help="gateway only: its gRPC address")
    serve.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help="layers only: a plaintext port answering health checks alone (for probes)",
    )
    serve.add_argument(
        "--no-metrics",
        action="store_true",
        help="open neither console_listen nor metrics_listen (a CLI command's private stack)",
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
        command = sub.add_parser(name, help=text, epilog=_EXITS["check"])
        command.add_argument("ref", metavar="REF", help="<alias>/<repository>[:tag|@digest]")
        command.add_argument("--config", help=_CONFIG_HELP)
        command.add_argument("--json", action="store_true")

    reevaluate = sub.add_parser(
        "reevaluate",
        help="verify every admitted image again under the current policy; revoke failures",
        epilog=_EXITS["reevaluate"],
    )
    reevaluate.add_argument("--config", help=_CONFIG_HELP)
    reevaluate.add_argument("--json", action="store_true")
    reevaluate.add_argument(
        "--force", action="store_true", help="also images admitted under the current policy"
    )
    reevaluate.add_argument("--limit", type=int, default=10_000, help="at most N images")
    reevaluate.add_argument(
        "--deadline", type=float, default=3600.0, help="give up after SECONDS (default 3600)"
    )

    decisions = sub.add_parser(
        "decisions", help="list recorded decisions, newest first", epilog=_EXITS["decisions"]
    )
    decisions.add_argument("--config", help=_CONFIG_HELP)
    decisions.add_argument("--json", action="store_true")
    decisions.add_argument(
        "--limit", type=int, default=50, help=f"at most N decisions, 1 to {DECISIONS_MAX}"
    )

    quarantine = sub.add_parser(
        "quarantine",
        help="inspect the quarantine; release or delete an entry",
        epilog=_EXITS["quarantine"],
    )
    quarantine.add_argument("action", choices=("list", "show", "release", "delete"))
    quarantine.add_argument("id", nargs="?")
    quarantine.add_argument(
        "--reason", help="release only: why the waived findings are acceptable (recorded)"
    )
    quarantine.add_argument("--config", help=_CONFIG_HELP)
    quarantine.add_argument("--json", action="store_true")

    fsck = sub.add_parser(
        "fsck",
        help="hash every admitted file; check the database, audit log and layout"
        " (exit 0 clean, 1 problems found, 2 error)",
    )
    fsck.add_argument("--config", help=_CONFIG_HELP)
    fsck.add_argument("--json", action="store_true")
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="move damaged files to state_dir/damaged/, withdraw admissions that lost content,"
        " fix the layout (stop the gateway first)",
    )

    gc = sub.add_parser(
        "gc",
        help="remove admitted blobs no admission needs, and decisions and quarantine entries"
        " past retention (safe beside a running gateway)",
        epilog=_EXITS["gc"],
    )
    gc.add_argument("--config", help=_CONFIG_HELP)
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument("-v", "--verbose", action="store_true", help="list every item")
    gc.add_argument("--json", action="store_true")

    policy = sub.add_parser(
        "policy",
        help="policy tools: validate FILE reports every error and warning of a configuration",
        epilog=_EXITS["policy"],
    )
    policy.add_argument("action", choices=("validate",))
    policy.add_argument("file")
    policy.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")

    from pullguard.gateway import vulndb
    from pullguard.gateway.auth.client import add_token_command
    from pullguard.services.signature import verify_bundle

    add_token_command(sub)
    vulndb.add_arguments(sub, _EXITS["vulndb"], _CONFIG_HELP)

    verify_bundle.add_arguments(
        sub.add_parser(
            "verify-bundle",
            help="verify a sigstore bundle offline (exit 0 valid, 1 invalid)",
            epilog=_EXITS["verify-bundle"],
        )
    )
    return parser


DECISIONS_MAX = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say, and no one to say it to.
        _silence_stdout()
        return EXIT_OK
    except ConfigError as exc:
        for line in exc.message.splitlines():
            print(f"pullguard: configuration error: {line}", file=sys.stderr)
        return EXIT_ERROR
    except PullguardError as exc:
        print(f"pullguard: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"pullguard: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get(CONFIG_ENV) or None


def _say_which_config(args: argparse.Namespace, config: Config) -> None:
    """One line on stderr when the configuration was not named on the command line."""
    if args.config:
        return
    if os.environ.get(CONFIG_ENV):
        origin = f"{config.source} (from ${CONFIG_ENV})"
    else:
        origin = f"{config.source} (no --config and no ${CONFIG_ENV})"
    print(f"pullguard: using {origin}; state in {config.state_dir}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "verify-bundle":
        from pullguard.services.signature.verify_bundle import run

        return run(args)
    if args.command == "policy":
        return _validate(args.file, args.strict)
    if args.command == "token":
        from pullguard.gateway.auth.client import create_token

        return create_token(args)
    config = load_config(_config_path(args))
    if args.command == "up":
        from pullguard.gateway.auth.exposure import check_exposure
        from pullguard.gateway.supervisor import run_up

        configure_logging(config.logging)
        check_exposure(config)
        _check_addresses_free(config)
        return run_up(config, _config_path(args), restart=not args.no_restart)
    if args.command == "serve":
        return _serve(args, config)
    if args.command == "vulndb":
        from pullguard.gateway import vulndb

        return vulndb.run(args, config)
    from pullguard.gateway import cli_commands

    if args.command in ("check", "admit"):
        return cli_commands.check(args, config)
    if args.command == "decisions":
        _say_which_config(args, config)
        return cli_commands.decisions(args, config)
    if args.command == "reevaluate":
        return cli_commands.reevaluate(args, config)
    if args.command == "fsck":
        from pullguard.gateway import fsck

        _say_which_config(args, config)
        return fsck.run(
            config.state_dir, repair=args.repair, as_json=args.json, database=config.database
        )
    if args.command == "gc":
        from pullguard.gateway.gc import command as gc_command

        _say_which_config(args, config)
        return gc_command.run(config, dry=args.dry_run, verbose=args.verbose, as_json=args.json)
    if args.action != "release":
        _say_which_config(args, config)
    return cli_commands.quarantine(args, config)


def _validate(path: str, strict: bool) -> int:
    """Every error of the file, then every warning; see ``_EXITS["policy"]``."""
    from pullguard.gateway.policy_lint import policy_warnings

    try:
        config = load_config(path)
    except ConfigUnreadable as exc:
        print(f"pullguard: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"error: {error.message}", file=sys.stderr)
        print(f"{path}: invalid ({len(exc.errors)} errors)", file=sys.stderr)
        return EXIT_DENIED
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        print(f"{path}: invalid (1 error)", file=sys.stderr)
        return EXIT_DENIED
    warnings = policy_warnings(config)
    for warning in warnings:
        print(f"warning: {path}: {warning}", file=sys.stderr)
    if warnings and strict:
        print(f"{path}: {len(warnings)} warnings, refused under --strict", file=sys.stderr)
        return EXIT_DENIED
    counted = f", {len(warnings)} warnings" if warnings else ""
    print(
        f"{path}: valid ({len(config.policy.rules)} rules{counted}, policy {config.policy_version})"
    )
    return EXIT_OK


def _check_addresses_free(config: Config) -> None:
    """Refuse before anything starts when an address to listen on is taken."""
    wanted = {"listen": config.listen, "grpc_listen": config.grpc_listen}
    wanted.update(
        {
            f"services.{name}": address
            for name, address in config.services.items()
            if not is_replicated(address)  # `up` refuses these: it listens on one address
        }
    )
    if config.console_listen is not None:
        wanted["console_listen"] = config.console_listen
    wanted.update({f"metrics_listen.{n}": a for n, a in config.metrics_listen.items()})
    _refuse_taken({f"{key} in {config.source}": address for key, address in wanted.items()})


def _refuse_taken(wanted: dict[str, str]) -> None:
    """``wanted`` maps where an address was given to the HOST:PORT to listen on."""
    import socket

    for origin, address in wanted.items():
        if address.startswith("unix:"):
            continue  # a socket in a private folder: the server itself says if it cannot bind
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or int(port) > 65535:
            raise PullguardError(f"{origin} wants HOST:PORT, got {address[:100]!r}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                raise PullguardError(
                    f"cannot listen on {address} ({origin}):"
                    f" {exc.strerror or exc}; nothing was started"
                ) from None


def _serve(args: argparse.Namespace, config: Config) -> int:
    configure_logging(config.logging)
    if args.no_metrics:
        config = dataclasses.replace(config, console_listen=None, metrics_listen={})
    if args.service == "gateway":
        from dataclasses import replace

        from pullguard.gateway.app import run_gateway

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
        _refuse_taken({"--listen": config.listen, "--grpc-listen": config.grpc_listen})
        try:
            run_gateway(config)
        except OSError as exc:
            raise PullguardError(
                f"gateway: cannot listen on {config.listen} or {config.grpc_listen}:"
                f" {exc.strerror or exc}"
            ) from None
        return EXIT_OK
    import importlib

    _refuse_taken({"--listen": args.listen})
    servicer = importlib.import_module(f"pullguard.services.{args.service}.servicer")
    return run_service(args.service, servicer.register, config, args.listen, args.health_listen)


if __name__ == "__main__":
    raise SystemExit(main())
