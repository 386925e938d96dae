#!/usr/bin/env bash
# Install Debian packages that are missing (used by `make` targets).
# Usage: deploy/system-deps.sh PKG[:COMMAND] ...   (COMMAND = the binary that shows it is installed)
# Needs root or sudo; otherwise it names what is missing and exits 1.
set -euo pipefail
missing=()
for spec in "$@"; do
  pkg="${spec%%:*}"; cmd="${spec#*:}"
  if [[ "$spec" == *:* ]]; then
    command -v "$cmd" >/dev/null 2>&1 && continue
  else
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
  fi
  missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "system-deps: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2; exit 1; fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
