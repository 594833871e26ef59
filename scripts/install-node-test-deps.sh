#!/usr/bin/env bash
# Installs the node packages the signature tests use to make real keyless
# sigstore bundles offline (@sigstore/sign against @sigstore/mock; see
# tests/support/signers/node/keyless.js): `npm ci` from the committed lock
# file into tests/support/signers/node/node_modules. Needs node >= 20.17 and
# npm (Debian: apt-get install nodejs npm). Idempotent: does nothing when the
# installed tree already matches the lock file.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
node_dir="$here/tests/support/signers/node"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing apt packages: nodejs npm"
  sudo_cmd=()
  if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi

major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "node $(node --version) is too old for @sigstore/sign (needs >= 20.17)" >&2
  exit 1
fi

# npm writes node_modules/.package-lock.json on install; when it is newer
# than the committed lock file, the tree is current.
installed="$node_dir/node_modules/.package-lock.json"
if [ -f "$installed" ] && [ "$installed" -nt "$node_dir/package-lock.json" ]; then
  exit 0
fi
echo "installing node test packages into $node_dir/node_modules"
(cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
