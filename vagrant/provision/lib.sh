# shellcheck shell=bash
# Shared by the provisioning scripts (sourced, not run).
#
# Two places run them: a Vagrant VM (as root, systemd, the .deb installed)
# and the netns stand-in (vagrant/standin/run), where each "VM" is a network
# namespace and TUNTERM_STANDIN=1. What differs is said here, once:
#   TUNTERM_BIN_DIR  where tunterm, tunterm-apsim, tunterm-lab, tunterm-cloud
#                    are (default: the installed package for tunterm and
#                    tunterm-agent, /vagrant-root/target/release for the rest)
#   STATE_DIR        logs, pid files, sockets, configuration (default
#                    /run/tunterm-lab in a VM; the stand-in gives one per host)
#   TUNTERM_STANDIN  1: no apt, no systemd: processes in the background with
#                    pid files, nothing written under /etc but /etc/netns/<ns>

set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../lab.env
. "$LAB_DIR/lab.env"

STANDIN=${TUNTERM_STANDIN:-0}
STATE_DIR=${STATE_DIR:-/run/tunterm-lab}
REPO_DIR=${REPO_DIR:-/vagrant-root}
mkdir -p "$STATE_DIR"

log() { echo "[$(hostname -s 2>/dev/null || echo host) $(basename "$0")] $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# A workspace binary: TUNTERM_BIN_DIR, else the package's (tunterm,
# tunterm-agent), else the repository's release build (synced into the VM).
bin() {
    local name=$1
    if [ -n "${TUNTERM_BIN_DIR:-}" ]; then
        echo "$TUNTERM_BIN_DIR/$name"
    elif [ -x "/usr/bin/$name" ]; then
        echo "/usr/bin/$name"
    else
        echo "$REPO_DIR/target/release/$name"
    fi
}

# The interface with this MAC (the Vagrantfile and the stand-in set them).
if_by_mac() {
    local mac=${1,,} f
    for f in /sys/class/net/*/address; do
        if [ "$(cat "$f")" = "$mac" ]; then
            basename "$(dirname "$f")"
            return 0
        fi
    done
    die "no interface with MAC $mac (ip link: $(ip -br link | tr '\n' ';'))"
}

# Debian packages, in a VM only (the stand-in's machine has them:
# .ci/install-deps). Services must not start by themselves.
pkgs() {
    [ "$STANDIN" = 1 ] && return 0
    local missing=() p
    for p in "$@"; do
        [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *'ok installed' ]] || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    rm -f /usr/sbin/policy-rc.d
}

# Run a long-lived lab process NAME: a transient systemd unit in a VM
# (`journalctl -u NAME`), a background process with a pid file in the
# stand-in. Replaces a running one of the same name.
run_bg() {
    local name=$1
    shift
    stop_bg "$name"
    if [ "$STANDIN" = 1 ]; then
        setsid "$@" </dev/null >"$STATE_DIR/$name.log" 2>&1 &
        echo $! >"$STATE_DIR/$name.pid"
    else
        systemd-run --quiet --unit="$name" --collect -p Restart=no "$@"
    fi
}

stop_bg() {
    local name=$1 pid
    if [ "$STANDIN" = 1 ]; then
        [ -f "$STATE_DIR/$name.pid" ] || return 0
        pid=$(cat "$STATE_DIR/$name.pid")
        rm -f "$STATE_DIR/$name.pid"
        kill "$pid" 2>/dev/null || return 0
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    else
        systemctl stop "$name" 2>/dev/null || true
        systemctl reset-failed "$name" 2>/dev/null || true
    fi
}

# What a lab process said (for error messages).
bg_log() {
    if [ "$STANDIN" = 1 ]; then
        tail -n 30 "$STATE_DIR/$1.log" 2>/dev/null || true
    else
        journalctl -u "$1" -n 30 --no-pager 2>/dev/null || true
    fi
}

# Client namespaces (on an AP). In the stand-in this script runs under
# `ip netns exec`, in a mount namespace of its own whose new mounts do not
# propagate out: a namespace made there would be invisible outside. Made
# (and removed) in the stand-in's own mount namespace instead (HOST_MNT_NS,
# /proc/<its pid>/ns/mnt); the same calls in a VM.
netns_add() {
    if [ "$STANDIN" = 1 ]; then
        nsenter --mount="${HOST_MNT_NS:?}" ip netns add "$1"
    else
        ip netns add "$1"
    fi
}
netns_del() {
    if [ "$STANDIN" = 1 ]; then
        nsenter --mount="${HOST_MNT_NS:?}" ip netns del "$1" 2>/dev/null || true
    else
        ip netns del "$1" 2>/dev/null || true
    fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s.
wait_for() {
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "timed out after ${secs} s waiting for $what" >&2
    return 1
}
