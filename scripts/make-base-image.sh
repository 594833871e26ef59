#!/usr/bin/env bash
# Makes the base image of the Containerfile, localhost/pullguard-base, from
# Debian packages alone (no registry is needed): mmdebstrap writes a minimal
# Debian rootfs with python3 and the CA certificates into a tarball, then
# `podman import` turns it into an image. Debian's own mirror is the only
# source; the suite is the host's (bookworm or trixie) unless SUITE is set.
#
#   scripts/make-base-image.sh [IMAGE]        (default localhost/pullguard-base)
#
# PODMAN may name the podman command with global options, e.g.
# PODMAN="podman --root DIR --storage-driver vfs".
set -euo pipefail
image="${1:-localhost/pullguard-base}"
podman_cmd=(${PODMAN:-podman})
suite="${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: make system-deps" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# minbase: essential packages and apt; python3 is the runtime every service
# needs, ca-certificates lets fetcher verify upstream TLS. No compiler, no pip.
mmdebstrap --quiet --variant=minbase --include=python3,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$suite" "$work/rootfs.tar" "$mirror"
"${podman_cmd[@]}" import --quiet \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --message "pullguard base: Debian $suite minbase + python3, from $mirror" \
  "$work/rootfs.tar" "$image" >/dev/null
echo "$image: Debian $suite minbase with python3"
