"""The README's client recipes, run with the real clients from Debian's packages.

podman and buildah (rootful, vfs, their own root and registries.conf),
containerd's ``ctr`` against a containerd the test starts, docker 20.10's
daemon without networking, and distribution as a pull-through cache in front
of pullguard. Each client pulls a single-arch image, an index (it must pick
this machine's platform), an image by digest, and is refused one image: what
its user sees is asserted. Everything is on 127.0.0.1; every process is
stopped by PID and every folder unmounted and removed.

Mirror recipes can let a denied pull bypass pullguard: containerd's
hosts.toml and podman's ``[[registry.mirror]]`` are shown doing so here, with
a second real registry standing in for the public one, beside the README's
recipes that do not. docker's ``registry-mirrors`` falls back to Docker Hub
itself, which no test here may contact, so that one is documented in the
README, not run. A pull-through cache is shown serving what pullguard
revoked.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import yaml

from tests.support.clients import (
    Containerd,
    ContainersStorage,
    Dockerd,
    native_arch,
    remove_tree,
    require,
)
from tests.support.images import (
    BuiltImage,
    BuiltIndex,
    build_image,
    build_index,
    layout_manifest_digest,
    pull,
    push,
    push_index,
    random_layers,
    sha256,
)
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, write_config

DENIED_REASON = "analysis: lab/team/evil/app matches deny glob '**/evil/**'"


class Client(Protocol):
    def pull(self, reference: str) -> subprocess.CompletedProcess[str]: ...

    def has_image(self, reference: str, config_digest: str) -> bool: ...


@dataclass
class Images:
    single: BuiltImage
    index: BuiltIndex
    by_digest: BuiltImage
    cached: BuiltImage
    denied: BuiltImage

    @property
    def native(self) -> BuiltImage:
        return self.index.children[0]

    @property
    def foreign(self) -> BuiltImage:
        return self.index.children[1]


@dataclass
class Stack:
    root: Path
    upstream: RegistryProcess
    pullguard: Pullguard
    cache: RegistryProcess
    images: Images

    @property
    def pg(self) -> str:
        return self.pullguard.address


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Short: podman refuses a runroot longer than 50 characters.
    root = Path(tempfile.mkdtemp(prefix="pgc-"))
    try:
        yield root
    finally:
        remove_tree(root)


def _config_digest(image: BuiltImage) -> str:
    return sha256(image.config)


@pytest.fixture(scope="module")
def stack(workdir: Path) -> Iterator[Stack]:
    require("docker-registry", "skopeo")
    upstream = RegistryProcess(workdir / "upstream")
    upstream.start()
    pullguard: Pullguard | None = None
    cache: RegistryProcess | None = None
    try:
        arch = native_arch()
        other = "arm64" if arch != "arm64" else "amd64"
        src = workdir / "src"
        images = Images(
            single=build_image(
                src / "single", "v1", random_layers(1, 8192, seed=1), architecture=arch
            ),
            index=build_index(src / "index", "v1", [("linux", arch), ("linux", other)], seed=2),
            by_digest=build_image(
                src / "digest", "v1", random_layers(1, 8192, seed=5), architecture=arch
            ),
            cached=build_image(
                src / "cached", "v1", random_layers(1, 8192, seed=6), architecture=arch
            ),
            denied=build_image(
                src / "denied", "v1", random_layers(1, 8192, seed=7), architecture=arch
            ),
        )
        push(images.single, upstream.address, "team/app")
        push_index(images.index, upstream.address, "team/multi")
        push(images.by_digest, upstream.address, "team/pinned")
        push(images.cached, upstream.address, "team/cached")
        push(images.denied, upstream.address, "team/evil/app")
        path, config = write_config(workdir, upstream.url)
        pullguard = Pullguard(path, config)
        pullguard.start()
        cache = RegistryProcess(workdir / "cache", proxy_remote=f"http://{pullguard.address}")
        cache.start()
        yield Stack(workdir, upstream, pullguard, cache, images)
    finally:
        if cache is not None:
            cache.stop()
        if pullguard is not None:
            pullguard.stop()
        upstream.stop()


def _podman(stack: Stack, binary: str) -> Generator[ContainersStorage, None, None]:
    require(binary)
    yield ContainersStorage(binary, stack.root / binary, [stack.pg, stack.cache.address])


@pytest.fixture(scope="module")
def containerd(stack: Stack) -> Iterator[Containerd]:
    require("containerd", "ctr")
    daemon = Containerd(stack.root / "containerd")
    try:
        daemon.start()
        daemon.plain_http(stack.pg)
        daemon.plain_http(stack.cache.address)
        yield daemon
    finally:
        daemon.stop()


def _docker(stack: Stack) -> Generator[Dockerd, None, None]:
    require("dockerd")
    daemon = Dockerd(stack.root / "docker", [stack.pg, stack.cache.address])
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def _ctr(request: pytest.FixtureRequest) -> Generator[Containerd, None, None]:
    yield request.getfixturevalue("containerd")


STARTERS: dict[str, Callable[[pytest.FixtureRequest, Stack], Generator[Client, None, None]]] = {
    "podman": lambda _, stack: _podman(stack, "podman"),
    "buildah": lambda _, stack: _podman(stack, "buildah"),
    "ctr": lambda request, _: _ctr(request),
    "docker": lambda _, stack: _docker(stack),
}

#: What each client's user reads when pullguard refuses (stderr).
DENIAL_SHOWN = {
    "podman": f"denied: {DENIED_REASON}",
    "buildah": f"denied: {DENIED_REASON}",
    # ctr resolves with HEAD, whose answer has no body: it shows the status
    # line only. containerd 1.6 prints no Warning header either (checked by
    # hand against a server that sends one), so the reason stays unseen.
    "ctr": "failed with status code [manifests v1]: 403 Forbidden",
    "docker": f"denied: {DENIED_REASON}",
}

#: What each client's user reads when the pull-through cache got pullguard's 403.
CACHE_DENIAL_SHOWN = {
    "podman": "manifest unknown",
    "buildah": "manifest unknown",
    "ctr": "not found",
    "docker": "manifest unknown",
}


@pytest.fixture(scope="module", params=list(STARTERS))
def client(request: pytest.FixtureRequest, stack: Stack) -> Iterator[tuple[str, Client]]:
    """One client at a time, with its daemon (if any) for the whole module."""
    name = str(request.param)
    started = STARTERS[name](request, stack)
    instance = next(started)
    try:
        yield name, instance
    finally:
        started.close()


def _pulled(client: Client, reference: str, image: BuiltImage, stack: Stack) -> None:
    done = client.pull(reference)
    assert done.returncode == 0, f"{reference}: {done.stderr}\n{stack.pullguard.log()[-3000:]}"
    assert client.has_image(reference, _config_digest(image))


def test_single_arch_pull(client: tuple[str, Client], stack: Stack) -> None:
    _, instance = client
    _pulled(instance, f"{stack.pg}/lab/team/app:v1", stack.images.single, stack)


def test_index_pull_picks_the_native_platform(client: tuple[str, Client], stack: Stack) -> None:
    _, instance = client
    reference = f"{stack.pg}/lab/team/multi:v1"
    _pulled(instance, reference, stack.images.native, stack)
    assert not instance.has_image(reference, _config_digest(stack.images.foreign))


def test_pull_by_digest(client: tuple[str, Client], stack: Stack) -> None:
    _, instance = client
    image = stack.images.by_digest
    _pulled(instance, f"{stack.pg}/lab/team/pinned@{image.digest}", image, stack)


def test_denied_pull_shows_the_reason(client: tuple[str, Client], stack: Stack) -> None:
    name, instance = client
    done = instance.pull(f"{stack.pg}/lab/team/evil/app:v1")
    assert done.returncode != 0
    assert DENIAL_SHOWN[name] in done.stderr, done.stderr
    seen = [r for r in stack.upstream.requests() if "/team/evil/" in r and "GET" in r]
    assert seen == [], "a denied name reached the upstream"


def test_pull_through_cache_serves_admitted_and_hides_the_reason(
    client: tuple[str, Client], stack: Stack
) -> None:
    name, instance = client
    cache = stack.cache.address
    _pulled(instance, f"{cache}/lab/team/cached:v1", stack.images.cached, stack)

    done = instance.pull(f"{cache}/lab/team/evil/app:v1")

    assert done.returncode != 0
    assert CACHE_DENIAL_SHOWN[name] in done.stderr, done.stderr
    # The cache turns pullguard's 403 into "unknown": the reason is lost.
    assert DENIED_REASON not in done.stderr
    assert not stack.cache.has_blob(stack.images.denied.digest)


# -- containerd's hosts.toml: which recipes can bypass pullguard -------------


@pytest.fixture(scope="module")
def public(stack: Stack) -> Iterator[RegistryProcess]:
    """A second real registry standing in for the public one: it holds the
    image pullguard denies, under the name a client would ask the public
    registry for."""
    registry = RegistryProcess(stack.root / "public")
    registry.start()
    try:
        push(stack.images.denied, registry.address, "team/evil/app")
        push(stack.images.single, registry.address, "team/app")
        yield registry
    finally:
        registry.stop()


def _served(registry: RegistryProcess, since: int, repository: str) -> list[str]:
    return [r for r in registry.requests()[since:] if f"/v2/{repository}/manifests/" in r]


#: hosts.toml files that send a denied pull to the registry in the image name.
BYPASSING_HOSTS_TOML = {
    # The usual mirror recipe: pullguard as a [host], the public registry as
    # `server`. containerd tries the next host after pullguard's 403.
    "server-after-denial": (
        'server = "http://{public}"\n'
        '[host."http://{pg}/v2/lab"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
    ),
    # containerd 1.6 logs "invalid `host` tree", ignores the file and uses
    # the default host: the registry named in the image reference.
    "no-host-table": 'server = "http://{pg}/v2/lab"\noverride_path = true\n',
}


@pytest.mark.parametrize("case", list(BYPASSING_HOSTS_TOML))
def test_containerd_hosts_toml_that_bypasses_pullguard(
    case: str, containerd: Containerd, stack: Stack, public: RegistryProcess
) -> None:
    hosts = containerd.hosts_toml(
        public.address,
        BYPASSING_HOSTS_TOML[case].format(public=public.address, pg=stack.pg),
        hosts_dir=stack.root / f"hosts-{case}",
    )
    since = len(public.requests())

    done = containerd.pull(f"{public.address}/team/evil/app:v1", hosts)

    assert done.returncode == 0, done.stderr  # the denied image was pulled: a bypass
    assert _served(public, since, "team/evil/app"), public.requests()[since:]


def test_containerd_recipe_without_fallback(
    containerd: Containerd, stack: Stack, public: RegistryProcess
) -> None:
    # The README's recipe: `server` is pullguard itself, so every host
    # containerd may try is pullguard.
    hosts = containerd.hosts_toml(
        public.address,
        f'server = "http://{stack.pg}/v2/lab"\n'
        "override_path = true\n"
        f'[host."http://{stack.pg}/v2/lab"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n",
        hosts_dir=stack.root / "hosts-recipe",
    )
    since = len(public.requests())

    denied = containerd.pull(f"{public.address}/team/evil/app:v1", hosts)
    allowed = containerd.pull(f"{public.address}/team/app:v1", hosts)

    assert denied.returncode != 0
    assert DENIAL_SHOWN["ctr"] in denied.stderr, denied.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert containerd.has_image(
        f"{public.address}/team/app:v1", _config_digest(stack.images.single)
    )
    assert public.requests()[since:] == []  # all through pullguard


# -- podman's registries.conf: a mirror falls back, a rewritten prefix does not


def test_podman_mirror_falls_back_to_the_registry_after_a_denial(
    stack: Stack, public: RegistryProcess
) -> None:
    require("podman")
    podman = ContainersStorage(
        "podman",
        stack.root / "pm",
        [],
        f'[[registry]]\nlocation = "{public.address}"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{stack.pg}/lab"\ninsecure = true\n',
    )
    since = len(public.requests())

    done = podman.pull(f"{public.address}/team/evil/app:v1")

    assert done.returncode == 0, done.stderr  # the denied image was pulled: a bypass
    assert _served(public, since, "team/evil/app"), public.requests()[since:]


def test_podman_recipe_without_fallback(stack: Stack, public: RegistryProcess) -> None:
    require("podman")
    # The README's recipe: the public registry's prefix rewritten to pullguard.
    podman = ContainersStorage(
        "podman",
        stack.root / "pp",
        [],
        f'[[registry]]\nprefix = "{public.address}"\nlocation = "{stack.pg}/lab"\n'
        "insecure = true\n",
    )
    since = len(public.requests())

    denied = podman.pull(f"{public.address}/team/evil/app:v1")
    allowed = podman.pull(f"{public.address}/team/app:v1")

    assert denied.returncode != 0
    assert DENIAL_SHOWN["podman"] in denied.stderr, denied.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert podman.has_image(f"{public.address}/team/app:v1", _config_digest(stack.images.single))
    assert public.requests()[since:] == []  # all through pullguard


# -- a pull-through cache keeps what pullguard revoked ------------------------


def test_pull_through_cache_keeps_serving_what_reevaluate_revoked(stack: Stack) -> None:
    root = stack.root / "revoked"
    root.mkdir()
    deny_file = root / "deny.txt"
    deny_file.write_text("")
    path, config = write_config(root, stack.upstream.url)
    config["policy"]["deny_digests_file"] = str(deny_file)
    path.write_text(yaml.safe_dump(config))
    pullguard = Pullguard(path, config)
    cache = RegistryProcess(root / "cache", proxy_remote=f"http://{pullguard.address}")
    try:
        pullguard.start()
        cache.start()
        image = stack.images.single
        by_tag, by_digest = "lab/team/app:v1", f"lab/team/app@{image.digest}"
        assert pull(f"{cache.address}/{by_tag}", root / "warm", "v1").returncode == 0

        deny_file.write_text(image.digest + "\n")  # re-read by pullguard when it changes
        revoked = pullguard.cli("reevaluate", "--json")
        assert revoked.returncode == 1, revoked.stdout + revoked.stderr
        assert pull(f"{pullguard.address}/{by_tag}", root / "direct", "v1").returncode != 0

        # pullguard refuses it now; the cache still serves it, by tag and by digest.
        for number, reference in enumerate((by_tag, by_digest)):
            served = pull(f"{cache.address}/{reference}", root / f"stale-{number}", "v1")
            assert served.returncode == 0, served.stderr
            assert layout_manifest_digest(root / f"stale-{number}", "v1") == image.digest
    finally:
        cache.stop()
        pullguard.stop()
