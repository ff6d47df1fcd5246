#!/usr/bin/env bash
# Installs Debian's Chromium and its ChromeDriver (packages chromium, chromium-driver) for the
# browser tests, when they are not on the machine. Idempotent. Needs root, or sudo without a
# password; the tests that need the browser skip, saying why, when it could not be installed.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  run=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  run=(sudo -n)
else
  echo "install-browser: chromium is missing and this user cannot install packages" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
for attempt in 1 2; do
  if "${run[@]}" apt-get install -y --no-install-recommends chromium chromium-driver >"$log" 2>&1 \
    || { "${run[@]}" apt-get update >>"$log" 2>&1 \
      && "${run[@]}" apt-get install -y --no-install-recommends chromium chromium-driver >>"$log" 2>&1; }; then
    rm -f "$log"
    exit 0
  fi
  echo "install-browser: apt-get failed (attempt $attempt):" >&2
  tail -5 "$log" >&2
done
rm -f "$log"
exit 1
