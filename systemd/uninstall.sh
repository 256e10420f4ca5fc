#!/usr/bin/env bash
# Remove what systemd/install.sh installed: the units and the virtualenv /opt/kzprobe.
# Keeps the results (/var/lib/kzprobe), the config and tokens (/etc/kzprobe) and the
# user kzprobe, unless --purge.
#
#   sudo ./systemd/uninstall.sh [--purge]
#   ./systemd/uninstall.sh --root /tmp/stage [--purge]     (also: DESTDIR=/tmp/stage)
set -euo pipefail

ROOT=${DESTDIR:-}
PURGE=0
while (($#)); do
  case $1 in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) echo "usage: uninstall.sh [--root DIR] [--purge]"; exit 0 ;;
    *) echo "uninstall.sh: unknown argument: $1" >&2; exit 64 ;;
  esac
done
ROOT=${ROOT%/}
PREFIX=/opt/kzprobe
UNITS=(kzprobe.timer kzprobe.service kzprobe-helper.service)

say() { printf 'uninstall.sh: %s\n' "$*"; }

if [[ -z $ROOT ]]; then
  LIVE=1
  ((EUID == 0)) || { echo "uninstall.sh: error: run as root (sudo)" >&2; exit 1; }
else
  LIVE=0
  [[ -d $ROOT ]] || { echo "uninstall.sh: error: $ROOT: no such directory" >&2; exit 1; }
fi

if command -v systemctl >/dev/null; then
  if ((LIVE)) && [[ -d /run/systemd/system ]]; then
    systemctl disable --now "${UNITS[@]}" 2>/dev/null || true
  elif ((LIVE)); then
    systemctl --quiet disable "${UNITS[@]}" 2>/dev/null || true
  else
    systemctl --root="$ROOT" --quiet disable "${UNITS[@]}" 2>/dev/null || true
  fi
fi
for unit in "${UNITS[@]}"; do
  rm -f "$ROOT/etc/systemd/system/$unit" "$ROOT/etc/systemd/system/timers.target.wants/$unit" \
        "$ROOT/etc/systemd/system/multi-user.target.wants/$unit"
  rm -rf "$ROOT/etc/systemd/system/$unit.d"
done
if ((LIVE)) && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi
say "removed the units from $ROOT/etc/systemd/system"

rm -rf "$ROOT$PREFIX"
link=$ROOT/usr/local/bin/kzprobe
if [[ -L $link && $(readlink "$link") == "$PREFIX/bin/kzprobe" ]]; then
  rm -f "$link"
fi
say "removed $ROOT$PREFIX"

if ((PURGE)); then
  rm -rf "$ROOT/etc/kzprobe" "$ROOT/var/lib/kzprobe" "$ROOT/var/cache/kzprobe" "$ROOT/var/log/kzprobe" \
         "$ROOT/var/cache/private/kzprobe-helper" "$ROOT/var/lib/private/kzprobe-helper"
  rm -f "$ROOT/usr/lib/sysusers.d/kzprobe.conf" "$ROOT/usr/lib/tmpfiles.d/kzprobe.conf"
  if ((LIVE)) && getent passwd kzprobe >/dev/null; then
    userdel kzprobe || say "could not remove user kzprobe"
  fi
  if ((LIVE)) && getent group kzprobe >/dev/null; then
    groupdel kzprobe || say "could not remove group kzprobe"
  fi
  if ((LIVE)); then
    say "purged the config, tokens, results and user kzprobe"
  else
    say "purged $ROOT/etc/kzprobe (config, tokens), $ROOT/var/lib/kzprobe (results) and the sysusers/tmpfiles" \
        "entries (a staged tree: no user of this machine touched)"
  fi
else
  say "kept: $ROOT/etc/kzprobe (config, tokens), $ROOT/var/lib/kzprobe (results), user kzprobe;" \
      "uninstall.sh --purge removes them"
fi
