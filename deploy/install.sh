#!/usr/bin/env bash
# Install the EMS controller as a systemd service (called by `make install`; see deploy/README.md).
#
#   PREFIX/releases/RELEASE/venv   this release's virtualenv (the project + pinned requirements)
#   PREFIX/releases/RELEASE/docs   its documentation
#   PREFIX/current -> releases/RELEASE, PREFIX/previous -> the release that was current before
#   SYSCONFDIR/ems.yaml            the site config (created from the SAFE example only if missing)
#   SYSCONFDIR/ems.example.yaml    the example of this release (always refreshed)
#   SYSCONFDIR/ems.env             secrets for {env: NAME} references (created empty, mode 0600, if missing)
#   UNITDIR/ems.service, SYSUSERSDIR/ems.conf, BINDIR/emsctl -> PREFIX/current/venv/bin/emsctl
#
# Honours DESTDIR (staging for a package: nothing outside DESTDIR is touched, no user is created,
# systemd is not reloaded). Never overwrites an existing ems.yaml or ems.env. Never enables or starts the service.
set -euo pipefail

DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/opt/ems}"
SYSCONFDIR="${SYSCONFDIR:-/etc/ems}"
UNITDIR="${UNITDIR:-/etc/systemd/system}"
SYSUSERSDIR="${SYSUSERSDIR:-/usr/lib/sysusers.d}"
BINDIR="${BINDIR:-/usr/local/bin}"
PYTHON="${PYTHON:-python3}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
RELEASE="${RELEASE:-$(git -C "$SRC" describe --always --dirty 2>/dev/null || date -u +%Y%m%d%H%M%S)}"

say() { echo "install: $*" >&2; }
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "EMS needs Python >= 3.11, found " + sys.version.split()[0])'

case "$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')" in
  /root/* | /home/*) say "WARNING: $PYTHON lives under /root or /home, which the service cannot see (ProtectHome=yes); use PYTHON=/usr/bin/python3" ;;
esac

root="$DESTDIR$PREFIX"
rel="$root/releases/$RELEASE"
say "release $RELEASE -> $rel"
rm -rf "$rel"
mkdir -p "$rel"
"$PYTHON" -m venv "$rel/venv"
"$rel/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$SRC/requirements.txt"
"$rel/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$SRC"
rm -rf "$SRC/build"  # setuptools' scratch directory from the non-editable build
cp -r "$SRC/docs" "$rel/docs"
install -m 0644 "$SRC/config/ems.example.yaml" "$rel/ems.example.yaml"
echo "$RELEASE" > "$rel/RELEASE"
if [[ -n "$DESTDIR" ]]; then  # scripts and activate files name the staging path: make them name the final one
  grep -rlF "$DESTDIR" "$rel/venv/bin" "$rel/venv/pyvenv.cfg" 2>/dev/null | xargs -r sed -i "s|$DESTDIR||g"
fi
"$rel/venv/bin/python" -c 'import main, api.app, interfaces.cli.main' # the release imports

if [[ -L "$root/current" && "$(readlink "$root/current")" != "releases/$RELEASE" ]]; then
  ln -sfn "$(readlink "$root/current")" "$root/previous"
  say "previous release: $(readlink "$root/previous")"
fi
ln -sfn "releases/$RELEASE" "$root/current"

install -d -m 0755 "$DESTDIR$UNITDIR" "$DESTDIR$SYSUSERSDIR" "$DESTDIR$BINDIR"
sed -e "s|/opt/ems|$PREFIX|g" -e "s|/etc/ems|$SYSCONFDIR|g" "$SRC/deploy/ems.service" > "$DESTDIR$UNITDIR/ems.service"
chmod 0644 "$DESTDIR$UNITDIR/ems.service"
install -m 0644 "$SRC/deploy/ems.sysusers.conf" "$DESTDIR$SYSUSERSDIR/ems.conf"
ln -sfn "$PREFIX/current/venv/bin/emsctl" "$DESTDIR$BINDIR/emsctl"

install -d -m 0750 "$DESTDIR$SYSCONFDIR"
install -m 0640 "$SRC/config/ems.example.yaml" "$DESTDIR$SYSCONFDIR/ems.example.yaml"
if [[ ! -e "$DESTDIR$SYSCONFDIR/ems.yaml" ]]; then
  install -m 0640 "$SRC/config/ems.example.yaml" "$DESTDIR$SYSCONFDIR/ems.yaml"
  say "created $SYSCONFDIR/ems.yaml from the example (control disabled, dry-run): edit it before enabling control"
else
  say "kept the existing $SYSCONFDIR/ems.yaml"
fi
if [[ ! -e "$DESTDIR$SYSCONFDIR/ems.env" ]]; then
  install -m 0600 /dev/null "$DESTDIR$SYSCONFDIR/ems.env"
fi

if [[ -z "$DESTDIR" && $(id -u) -eq 0 ]]; then
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$SYSUSERSDIR/ems.conf"
  elif ! id ems >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/ems --no-create-home --shell /usr/sbin/nologin --groups dialout ems
  fi
  chgrp ems "$SYSCONFDIR" "$SYSCONFDIR/ems.yaml" "$SYSCONFDIR/ems.example.yaml"
  if [[ -d /run/systemd/system ]]; then systemctl daemon-reload; fi
fi
"$rel/venv/bin/python" -m interfaces.cli.main config check "$DESTDIR$SYSCONFDIR/ems.yaml" --env-file "$DESTDIR$SYSCONFDIR/ems.env" >&2 \
  || say "WARNING: $SYSCONFDIR/ems.yaml does not validate with this release (see above): fix it before restarting the service"
say "done. Next: edit $SYSCONFDIR/ems.yaml, then: systemctl enable --now ems; journalctl -u ems -o cat -f (deploy/README.md)"
