# Shared bits of the scripts/ helpers; sourced, not run.
# shellcheck shell=bash

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where ensure-dockerd records a dockerd it started, so only that one is ever stopped.
DOCKERD_PIDFILE=${OVPN_DOCKERD_PIDFILE:-/run/ovpn-supervisor-test-dockerd.pid}
DOCKERD_LOG=${OVPN_DOCKERD_LOG:-/var/log/ovpn-supervisor-test-dockerd.log}

say() { echo "[$(basename "$0")] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

_apt_updated=0
# Install Debian packages non-interactively; `apt-get update` at most once per script run.
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    [ "$(id -u)" = 0 ] || die "need root to install $* (apt-get)"
    if [ "$_apt_updated" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || die "apt-get update failed"
        _apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null \
        || die "apt-get install $* failed"
}

# A static busybox is what the stand-in image is made of (a dynamic one lacks its libc there).
busybox_static_path() {
    local b
    for b in /usr/bin/busybox /bin/busybox; do
        if [ -x "$b" ] && ! LC_ALL=C ldd "$b" >/dev/null 2>&1; then
            echo "$b"; return 0
        fi
    done
    return 1
}

ensure_busybox_static() {
    busybox_static_path >/dev/null || apt_install busybox-static
    busybox_static_path >/dev/null || die "no static busybox after installing busybox-static"
}

# The mirror apt already uses here (sources.list or deb822 .sources), unless overridden.
debian_mirror() {
    local m
    m=$(grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$m" ] || m=$(grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?\S+' \
        /etc/apt/sources.list 2>/dev/null | awk '{print $NF}' | grep -v security | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

docker_ok() { timeout 20 docker info >/dev/null 2>&1; }

# PID of a still-running dockerd that ensure-dockerd started, or nothing.
started_dockerd_pid() {
    local pid
    [ -s "$DOCKERD_PIDFILE" ] || return 0
    pid=$(cat "$DOCKERD_PIDFILE")
    if [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        echo "$pid"
    fi
}

# Create .venv if needed and (re)install the package with its test extras when pyproject.toml
# changed since the last install; a fresh CI machine has no venv at all.
ensure_venv() {
    local venv="$REPO_ROOT/.venv" stamp want
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; } \
            || die "cannot create $venv"
    fi
    stamp="$venv/.ovpn-installed"
    want=$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "pip install -e '.[test]'"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO_ROOT[test]" \
            </dev/null || die "pip install -e '.[test]' failed"
        echo "$want" >"$stamp"
    fi
}
