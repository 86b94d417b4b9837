#!/usr/bin/env bash
# Installs the Debian packages listed in .ci/apt-packages.txt that are missing (mosquitto for
# the agent tests, chromium for the web tests). Called by `make`, so a newcomer's `make test`
# needs nothing installed by hand. Needs root or sudo; says what to do when it has neither.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
for pkg in $(grep -v '^#' .ci/apt-packages.txt); do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "missing Debian packages:$missing; install them as root (apt-get install$missing) and run make again" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian packages:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
