#!/usr/bin/env bash
# Installs the real tools the tests use: Debian's docker-registry (CNCF
# distribution), PostgreSQL, skopeo, Go (the OCI conformance suite) and rpm from apt, the
# container clients (podman, buildah, containerd, docker.io) from apt, and
# cosign 2.5 and oras 1.2 (Debian 13's packages; on Debian 12 their .debs are
# unpacked into a private folder without touching /etc/apt). Idempotent: does
# nothing when everything is already there.
set -euo pipefail
tools_dir="${1:-.tools/bin}"
mkdir -p "$tools_dir"
tools_dir="$(cd "$tools_dir" && pwd)"

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
# Go builds the OCI conformance suite (tests/conformance/oci-distribution);
# golang-go is the name on Debian 12 (Go 1.19) and 13 (Go 1.24) alike.
command -v go >/dev/null 2>&1 || ls /usr/lib/go-1.*/bin/go >/dev/null 2>&1 || need_apt+=(golang-go)
# rpm: rpmbuild and rpm --justdb write the real rpmdb.sqlite of the vulnerability tests.
command -v rpmbuild >/dev/null 2>&1 || need_apt+=(rpm)
# setpriv: tests run a second, unprivileged uid; openssl: deploy/k8s's certificate script.
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# PostgreSQL: the tests start a throw-away cluster (initdb, pg_ctl) for `database:`.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# deploy/: mmdebstrap makes the image's base from Debian packages (make image);
# docker-compose (Debian's, 1.29) resolves and validates deploy/compose.yaml.
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
# catatonit: the pause process of podman's pods (`podman kube play`, make image-test).
command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || need_apt+=(catatonit)

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
have_cosign() { command -v cosign >/dev/null 2>&1 || [ -x "$tools_dir/cosign" ]; }
# oras attaches Notation signatures in tests/e2e/test_notation_e2e.py.
have_oras() { command -v oras >/dev/null 2>&1 || [ -x "$tools_dir/oras" ]; }

if [ "$codename" != "bookworm" ]; then
  have_cosign || need_apt+=(cosign)
  have_oras || need_apt+=(oras)
fi

# The clients of the README's recipes (tests/e2e/test_clients.py): podman,
# buildah, containerd's ctr and docker's daemon, without recommends (criu,
# slirp4netns, fuse-overlayfs, apparmor...: pulls into vfs need none of them;
# about 13 packages, some 15 s). runc, crun and uidmap come as dependencies.
need_clients=()
command -v podman >/dev/null 2>&1 || need_clients+=(podman)
command -v buildah >/dev/null 2>&1 || need_clients+=(buildah)
{ command -v containerd && command -v ctr; } >/dev/null 2>&1 || need_clients+=(containerd)
command -v dockerd >/dev/null 2>&1 || need_clients+=(docker.io)
# The console's browser test (tests/e2e/test_console_browser.py) drives
# Debian's headless chromium over the DevTools protocol; no driver needed.
command -v chromium >/dev/null 2>&1 || need_clients+=(chromium)

if [ "$((${#need_apt[@]} + ${#need_clients[@]}))" -gt 0 ]; then
  echo "installing apt packages: ${need_apt[*]} ${need_clients[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  apt_install=("${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
               -o DPkg::Lock::Timeout=300)
  if [ "${#need_apt[@]}" -gt 0 ]; then "${apt_install[@]}" "${need_apt[@]}" >/dev/null; fi
  if [ "${#need_clients[@]}" -gt 0 ]; then
    "${apt_install[@]}" --no-install-recommends "${need_clients[@]}" >/dev/null
  fi
fi

trixie_tools=()
have_cosign || trixie_tools+=(cosign)
have_oras || trixie_tools+=(oras)
if [ "${#trixie_tools[@]}" -gt 0 ]; then
  # Debian 12 has no cosign or oras package; trixie's need only libc >= 2.34.
  echo "fetching ${trixie_tools[*]} from Debian 13 into $tools_dir"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
            -o "APT::Sandbox::User=root")
  apt-get -qq "${apt_opts[@]}" update
  (cd "$work" && apt-get -qq "${apt_opts[@]}" download "${trixie_tools[@]}")
  for tool in "${trixie_tools[@]}"; do
    dpkg -x "$work"/"$tool"_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/$tool" "$tools_dir/$tool"
  done
fi

# kustomize renders deploy/k8s (tests/unit/test_deploy_k8s.py): kubectl's own
# (kubectl kustomize, v4 or later: components) or a kustomize binary. Debian has
# neither new enough (kubernetes-client is 1.20); with Go 1.22 or later (Debian
# 13's golang-go), build kustomize from its Go module.
have_kustomize() {
  command -v kustomize >/dev/null 2>&1 || [ -x "$tools_dir/kustomize" ] ||
    kubectl version --client 2>/dev/null | grep -E 'Kustomize Version: v[4-9]' >/dev/null
}
if ! have_kustomize; then
  go_bin="$(command -v go || ls /usr/lib/go-1.*/bin/go 2>/dev/null | sort -V | tail -1)"
  if [ -n "$go_bin" ] && "$go_bin" version | grep -E >/dev/null 'go1\.(2[2-9]|[3-9][0-9])'; then
    echo "building kustomize into $tools_dir"
    GOBIN="$tools_dir" "$go_bin" install sigs.k8s.io/kustomize/kustomize/v5@v5.4.3
  else
    echo "no kustomize: install kubectl (1.21 or later) or kustomize for deploy/k8s's tests" >&2
    exit 1
  fi
fi

command -v docker-registry >/dev/null
command -v skopeo >/dev/null
command -v mmdebstrap >/dev/null
command -v docker-compose >/dev/null
for client in podman buildah containerd ctr dockerd; do command -v "$client" >/dev/null; done
# Print the versions found. Every filter reads its whole input: under pipefail,
# one that stops early (head -1, grep -m1, grep -q) kills the writer with
# SIGPIPE and fails the run, but only when the writer is slow enough to notice.
cosign_bin="$(command -v cosign || echo "$tools_dir/cosign")"
oras_bin="$(command -v oras || echo "$tools_dir/oras")"
"$cosign_bin" version 2>/dev/null | awk '/GitVersion/ && !seen++'
"$oras_bin" version | awk 'NR == 1'
