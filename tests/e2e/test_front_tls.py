"""Issue 11 (5): HTTPS on the front door (``tls``), its certificate reloaded on SIGHUP.

A throw-away CA is made in the test. ``pullguard up`` with ``tls`` serves
the front door over HTTPS: skopeo pulls with ``--src-tls-verify=true`` and
the CA in ``--src-cert-dir``, and is refused without it. The certificate
and key files are then replaced by ones of another CA, SIGHUP goes to the
gateway's PID, and the new certificate is served; replacement files that do
not load leave the previous certificate serving.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.support.images import build_image, layout_manifest_digest, push, random_layers, skopeo
from tests.support.mtls import Issued, make_ca
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

StartPullguard = Callable[..., Pullguard]


def _served_certificate(address: str) -> x509.Certificate:
    """The certificate the front door presents now (no verification: we look at it)."""
    host, _, port = address.rpartition(":")
    context = ssl._create_unverified_context()
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _cert_dir(tmp_path: Path, name: str, issued: Issued) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(issued.ca, folder / "ca.crt")
    return folder


def _pull(pg: Pullguard, out: Path, cert_dir: Path | None) -> tuple[int, str]:
    trust = [f"--src-cert-dir={cert_dir}"] if cert_dir is not None else []
    done = skopeo(
        "copy",
        "--src-tls-verify=true",
        *trust,
        f"docker://{pg.address}/lab/team/app:v1",
        f"oci:{out}:v1",
    )
    return done.returncode, done.stderr


def _install(issued: Issued, certificate: Path, key: Path) -> None:
    # Written aside and renamed: a reload never reads half a file.
    for source, target in ((issued.key, key), (issued.certificate, certificate)):
        temporary = target.with_suffix(".new")
        shutil.copy(source, temporary)
        os.replace(temporary, target)


def _sighup_until_served(pg: Pullguard, wanted: x509.Certificate) -> None:
    pid = int(json.loads((pg.state_dir / "up.json").read_text())["gateway"]["pid"])
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while _served_certificate(pg.address) != wanted:
        assert time.monotonic() < deadline, pg.log()
        time.sleep(0.1)


@pytest.fixture
def tls_stack(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> tuple[Pullguard, Path, Path]:
    image = build_image(tmp_path / "src", "v1", random_layers(2, 16 * 1024, seed=61))
    push(image, upstream.address, "team/app")
    first = make_ca(tmp_path / "ca-one", "first front CA").issue("front-one")
    certificate, key = tmp_path / "front.pem", tmp_path / "front.key"
    _install(first, certificate, key)
    pg = pullguard_factory(upstream.url, tls={"certificate": str(certificate), "key": str(key)})
    return pg, certificate, key


def test_https_front_door_and_reload_on_sighup(
    tls_stack: tuple[Pullguard, Path, Path], tmp_path: Path
) -> None:
    pg, certificate, key = tls_stack
    first = Issued(tmp_path / "ca-one" / "ca.pem", certificate, key)
    first_dir = _cert_dir(tmp_path, "trust-one", first)
    code, stderr = _pull(pg, tmp_path / "out-one", first_dir)
    assert code == 0, stderr + pg.log()
    assert layout_manifest_digest(tmp_path / "out-one", "v1").startswith("sha256:")
    assert "pullguard is up: front door https://" in pg.log()

    code, stderr = _pull(pg, tmp_path / "out-untrusted", None)
    assert code != 0 and "certificate" in stderr, stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{pg.address}/v2/", timeout=10)  # no plain HTTP on the TLS port
    assert httpx.get(
        f"https://{pg.address}/v2/", verify=ssl.create_default_context(cafile=first.ca), timeout=10
    ).is_success

    # Another CA's certificate replaces the files; SIGHUP to the gateway's PID.
    before = _served_certificate(pg.address)
    second = make_ca(tmp_path / "ca-two", "second front CA").issue("front-two")
    _install(second, certificate, key)
    assert _served_certificate(pg.address) == before  # nothing changes before the signal
    _sighup_until_served(pg, x509.load_pem_x509_certificate(second.certificate.read_bytes()))
    second_dir = _cert_dir(tmp_path, "trust-two", second)
    code, stderr = _pull(pg, tmp_path / "out-two", second_dir)
    assert code == 0, stderr + pg.log()
    code, stderr = _pull(pg, tmp_path / "out-stale", first_dir)
    assert code != 0 and "certificate" in stderr, stderr

    # Files that do not load together: the previous certificate keeps serving.
    third = make_ca(tmp_path / "ca-three", "third front CA").issue("front-three")
    shutil.copy(third.certificate, certificate)  # a certificate without its key
    pid = int(json.loads((pg.state_dir / "up.json").read_text())["gateway"]["pid"])
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "cannot reload" not in pg.log():
        assert time.monotonic() < deadline, pg.log()
        time.sleep(0.1)
    assert _served_certificate(pg.address) == x509.load_pem_x509_certificate(
        second.certificate.read_bytes()
    )
    assert httpx.get(
        f"https://{pg.address}/v2/", verify=ssl.create_default_context(cafile=second.ca), timeout=10
    ).is_success
