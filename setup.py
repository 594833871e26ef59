"""Build hook: the generated gRPC code goes into every wheel.

``protos/pullguard/v1/*_pb2*.py`` are generated, never committed (``make
protos`` makes them in a checkout). A wheel built from a fresh clone (``pip
wheel .``) must still carry them, so ``build_py`` runs grpc_tools.protoc (a
build requirement in pyproject.toml) on the .proto files of the source tree
and writes the code next to the copied package. Everything else about the
package is declared in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "protos"
PROTO_PACKAGE = "pullguard/v1"


def generate_protos(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto under out_dir."""
    from importlib.resources import files

    from grpc_tools import protoc

    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto")
    )
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    well_known = str(files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {', '.join(protos)}")


class BuildPyWithProtos(build_py):
    """build_py, then the generated gRPC code for pullguard.v1 beside it."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            # An editable install imports from the source tree: generate there
            # only when `make protos` has not (a fresh clone).
            if not any((PROTO_ROOT / PROTO_PACKAGE).glob("*_pb2.py")):
                generate_protos(PROTO_ROOT)
            return
        generate_protos(Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos})
