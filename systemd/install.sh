#!/usr/bin/env bash
# Install kzprobe as a scheduled probe (Raspberry Pi OS 12, Debian, Ubuntu): README, "Deploying".
#
#   sudo ./systemd/install.sh                 # install to / and enable kzprobe.timer
#   ./systemd/install.sh --root /tmp/stage    # staged install (also: DESTDIR=/tmp/stage)
#
# A staged tree is for packaging: it is meant to be copied to / of the target, so every path
# written in it is the final one (the DESTDIR convention of the GNU Coding Standards). A
# virtualenv is not relocatable by itself (its scripts name their interpreter by absolute
# path), so, as dh-virtualenv does, the staged venv's scripts and activate files are rewritten
# from $ROOT/opt/kzprobe to /opt/kzprobe: they run once the tree is at /, on a target with the
# same Python (pyvenv.cfg "home"), and no longer from inside the staging directory.
#
# Writes:
#   /opt/kzprobe/                   virtualenv with kzprobe[packets] installed (pip install <this checkout>)
#   /opt/kzprobe/share/             README.md, helper-api.md, config.example.toml
#   /usr/local/bin/kzprobe          symlink to /opt/kzprobe/bin/kzprobe (for `kzprobe status`)
#   /etc/kzprobe/config.toml        from systemd/config.example.toml, ONLY if absent (root:kzprobe 0640);
#                                   it ships with [consent] accepted = false: runs refuse until you accept
#   /etc/kzprobe/tokens/            the probe's helper token (kzprobe:kzprobe 0700, files 0600)
#   /etc/kzprobe/helper/            the helper server's tokens and TLS key (root:root 0700, files 0600)
#   /etc/systemd/system/            kzprobe.service, kzprobe.timer, kzprobe-helper.service (0644)
#   /usr/lib/sysusers.d/kzprobe.conf, /usr/lib/tmpfiles.d/kzprobe.conf   the user and the modes above
# and creates the system user and group "kzprobe" (not with --root: the sysusers.d file
# records it, and the tmpfiles.d file gives /etc/kzprobe its group on the target at boot).
# With systemd running (install to /): daemon-reload, then enable --now kzprobe.timer.
# Without (a container, a chroot, --root): the timer is enabled offline (symlink), not started.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [--root DIR] [--no-venv] [--no-enable] [--python PYTHON]
  --root DIR      install under DIR (a staged tree; default $DESTDIR, else /); creates no user
  --no-venv       do not create /opt/kzprobe's virtualenv (tests; an existing one is kept)
  --no-enable     install the units but do not enable kzprobe.timer
  --python PY     the Python (>= 3.11) for the virtualenv (default python3)
EOF
}

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR:-}
VENV=1
ENABLE=1
PYTHON=python3
while (($#)); do
  case $1 in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --no-venv) VENV=0; shift ;;
    --no-enable) ENABLE=0; shift ;;
    --python) PYTHON=${2:?--python needs a path}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage >&2; exit 64 ;;
  esac
done
ROOT=${ROOT%/}          # "/" and "" both mean the running system
PREFIX=/opt/kzprobe
USER_NAME=kzprobe

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

if [[ -z $ROOT ]]; then
  LIVE=1
  ((EUID == 0)) || die "run as root (sudo ./systemd/install.sh), or stage with --root DIR"
else
  LIVE=0
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
fi

# Owners: the real ones on a live install; root (or the caller) in a staged tree, where
# the target's tmpfiles.d entry sets the group at boot.
if ((LIVE)); then
  if ! getent group "$USER_NAME" >/dev/null; then
    groupadd --system "$USER_NAME"
    say "created group $USER_NAME"
  fi
  if ! getent passwd "$USER_NAME" >/dev/null; then
    useradd --system --gid "$USER_NAME" --home-dir /var/lib/kzprobe --no-create-home \
      --shell /usr/sbin/nologin --comment "kzprobe measurement probe" "$USER_NAME"
    say "created system user $USER_NAME"
  fi
  P_USER=$USER_NAME P_GROUP=$USER_NAME
else
  say "staged install into $ROOT: user $USER_NAME not created (recorded in usr/lib/sysusers.d/kzprobe.conf)"
  P_USER=$(id -u) P_GROUP=$(id -g)
fi
R_USER=$(id -u) R_GROUP=$(id -g)   # root:root when run as root

own() {  # own MODE USER GROUP PATH: like install -m -o -g, tolerant of an unprivileged staged run
  chmod "$1" "$4"
  if ((EUID == 0)); then chown "$2:$3" "$4"; fi
}

# --- the user and the modes, for systemd-sysusers / systemd-tmpfiles on the target
install -d -m 0755 "$ROOT/usr/lib/sysusers.d" "$ROOT/usr/lib/tmpfiles.d"
cat >"$ROOT/usr/lib/sysusers.d/kzprobe.conf" <<'EOF'
# kzprobe's system user and group (installed by kzprobe's systemd/install.sh)
u kzprobe - "kzprobe measurement probe" /var/lib/kzprobe /usr/sbin/nologin
EOF
cat >"$ROOT/usr/lib/tmpfiles.d/kzprobe.conf" <<'EOF'
# kzprobe: analysts in group kzprobe read the config and the results; tokens stay private
z /etc/kzprobe              0750 root    kzprobe -
z /etc/kzprobe/config.toml  0640 root    kzprobe -
z /etc/kzprobe/tokens       0700 kzprobe kzprobe -
z /etc/kzprobe/helper       0700 root    root    -
EOF
chmod 0644 "$ROOT/usr/lib/sysusers.d/kzprobe.conf" "$ROOT/usr/lib/tmpfiles.d/kzprobe.conf"

# --- the virtualenv
if ((VENV)); then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11 (kzprobe needs Python >= 3.11)"
  "$PYTHON" -m venv "$ROOT$PREFIX" \
    || die "cannot create the virtualenv $ROOT$PREFIX (on Debian: apt install python3-venv)"
  say "installing kzprobe from this checkout ($SRC) into $ROOT$PREFIX (pip; its dependencies come from PyPI)"
  # python3 -m pip, not bin/pip: a re-staged venv's bin/pip already names the final path
  pip=("$ROOT$PREFIX/bin/python3" -m pip install --quiet --disable-pip-version-check)
  # [packets]: scapy, for the pcap files of packet-level evidence (kzprobe run --pcap, issue 16);
  # the packet tests themselves need only CAP_NET_RAW, which kzprobe.service grants
  "${pip[@]}" --upgrade "$SRC[packets]"
  # a re-install of the same version number must still replace the code (git pull)
  "${pip[@]}" --force-reinstall --no-deps "$SRC"
  [[ -x $ROOT$PREFIX/bin/kzprobe ]] || die "pip wrote no $ROOT$PREFIX/bin/kzprobe"
  "$ROOT$PREFIX/bin/python3" -m probe --version >/dev/null || die "kzprobe in $ROOT$PREFIX does not run"
else
  say "--no-venv: virtualenv $PREFIX not created"
fi

# --- a staged venv: point it at its final path (see the header)
relocate_venv() {
  local venv=$ROOT$PREFIX
  [[ -f $venv/pyvenv.cfg ]] || return 0
  "$PYTHON" - "$venv" "$PREFIX" <<'PY' || die "cannot rewrite the staged virtualenv $venv to $PREFIX"
import os, sys
venv, final = sys.argv[1], sys.argv[2]
old, new = venv.encode(), final.encode()
paths = [os.path.join(venv, "pyvenv.cfg")]
paths += [e.path for e in os.scandir(os.path.join(venv, "bin")) if e.is_file(follow_symlinks=False)]
for path in paths:
    with open(path, "rb") as f:
        data = f.read()
    if old in data and b"\0" not in data:  # text files only (scripts, activate*, pyvenv.cfg)
        st = os.stat(path)
        with open(path, "wb") as f:
            f.write(data.replace(old, new))
        os.chmod(path, st.st_mode)
PY
  local left
  left=$(grep -rlIF --exclude-dir=__pycache__ -- "$venv" "$venv/bin" "$venv/pyvenv.cfg" 2>/dev/null || true)
  [[ -z $left ]] || die "the staged virtualenv still names $venv in: $left"
  say "staged virtualenv: its scripts now run $PREFIX/bin/python3, the final path; they work once this" \
      "tree is copied to / on a target with the same Python ($(sed -n 's/^home = //p' "$venv/pyvenv.cfg")," \
      "$(sed -n 's/^version = //p; s/^version_info = //p' "$venv/pyvenv.cfg" | head -1)), not from $ROOT"
}
if ((!LIVE)); then
  relocate_venv
fi
install -d -m 0755 "$ROOT$PREFIX" "$ROOT$PREFIX/share" "$ROOT$PREFIX/share/docs" "$ROOT/usr/local/bin"
install -m 0644 "$SRC/README.md" "$SRC/systemd/config.example.toml" "$ROOT$PREFIX/share/"
install -m 0644 "$SRC/docs/helper-api.md" "$ROOT$PREFIX/share/docs/"
link=$ROOT/usr/local/bin/kzprobe
if [[ ! -e $link && ! -L $link ]] || [[ $(readlink "$link") == "$PREFIX/bin/kzprobe" ]]; then
  ln -sfn "$PREFIX/bin/kzprobe" "$link"
else
  say "kept $link (not ours); run $PREFIX/bin/kzprobe"
fi

# --- configuration and token directories (a user's config is never overwritten)
install -d "$ROOT/etc/kzprobe"
own 0750 "$R_USER" "$P_GROUP" "$ROOT/etc/kzprobe"
if [[ -e $ROOT/etc/kzprobe/config.toml ]]; then
  say "kept the existing $ROOT/etc/kzprobe/config.toml (the new example: $PREFIX/share/config.example.toml)"
else
  install -m 0640 "$SRC/systemd/config.example.toml" "$ROOT/etc/kzprobe/config.toml"
  own 0640 "$R_USER" "$P_GROUP" "$ROOT/etc/kzprobe/config.toml"
  say "wrote $ROOT/etc/kzprobe/config.toml: measurements stay disabled until you accept its risk notice"
fi
install -d "$ROOT/etc/kzprobe/tokens" "$ROOT/etc/kzprobe/helper"
own 0700 "$P_USER" "$P_GROUP" "$ROOT/etc/kzprobe/tokens"
own 0700 "$R_USER" "$R_GROUP" "$ROOT/etc/kzprobe/helper"
find "$ROOT/etc/kzprobe/tokens" "$ROOT/etc/kzprobe/helper" -maxdepth 1 -type f -exec chmod 0600 {} +

# --- units
install -d -m 0755 "$ROOT/etc/systemd/system"
for unit in kzprobe.service kzprobe.timer kzprobe-helper.service; do
  install -m 0644 "$SRC/systemd/$unit" "$ROOT/etc/systemd/system/$unit"
done
say "installed kzprobe.service, kzprobe.timer, kzprobe-helper.service into $ROOT/etc/systemd/system"

# --- enable
if ((!ENABLE)); then
  say "--no-enable: kzprobe.timer not enabled (systemctl enable --now kzprobe.timer)"
elif ! command -v systemctl >/dev/null; then
  say "systemctl not found: enable kzprobe.timer yourself"
elif ((!LIVE)); then
  systemctl --root="$ROOT" --quiet enable kzprobe.timer
  say "kzprobe.timer enabled in $ROOT (timers.target.wants), not started"
elif [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable --now kzprobe.timer
  say "kzprobe.timer enabled and started: $(systemctl show kzprobe.timer -P NextElapseUSecRealtime | sed 's/^/next run /')"
else
  systemctl --quiet enable kzprobe.timer
  say "systemd is not running here (no /run/systemd/system: a container or chroot?):" \
      "kzprobe.timer is enabled for the next boot but not started"
fi

cat <<EOF

Next:
  1. Read the risk notice in /etc/kzprobe/config.toml, set your [probe] asn/cc, and set
     [consent] accepted = true  (until then every run refuses: exit 78, "consent not given").
  2. Let analysts read the results:   sudo usermod -aG kzprobe <user>   (then log in again)
  3. Check:   kzprobe status          Run once now:   sudo systemctl start kzprobe.service
EOF
