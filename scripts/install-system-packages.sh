#!/usr/bin/env bash
# Installs the Debian packages listed in .ci/apt-packages.txt that are missing (mosquitto for
# the agent tests, chromium for the browser tests, postgresql for the operator's database).
# Called by `make` before anything else, so a newcomer's `make test` needs nothing installed by
# hand. Needs root or sudo; when it cannot install, it prints the one command to run and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
for pkg in $(grep -v '^#' .ci/apt-packages.txt); do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
command="apt-get update && apt-get install -y --no-install-recommends$missing"
cannot() {
  echo "error: missing Debian packages:$missing ($1)." >&2
  echo "Run this once, then make again:  sudo sh -c '$command'" >&2
  exit 1
}
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  cannot "installing them needs root, and sudo is missing or asks for a password"
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian packages:$missing"
$SUDO apt-get update -qq || cannot "apt-get update failed"
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing || cannot "apt-get install failed"
