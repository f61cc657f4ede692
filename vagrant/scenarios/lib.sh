# shellcheck shell=bash
# Shared by the scenarios (sourced): how to run a command on a lab host.
#
# LAB_MODE=vagrant (default): the hosts are the Vagrant VMs; commands go over
#   `ssh` with `vagrant ssh-config`, as root. Run from the host, in vagrant/.
# LAB_MODE=netns: the hosts are network namespaces $LAB_PREFIX<host> made by
#   vagrant/standin/run, which sets LAB_PREFIX, LAB_STATE (one STATE_DIR per
#   host under it) and TUNTERM_BIN_DIR.
# Hosts: edge1 edge2 ap1 ap2 upstream, cloud (LAB_CLOUD=1: with the VMs,
# the Vagrantfile's TUNTERM_CLOUD=1 says it). Clients: namespaces on the APs.

set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../lab.env
. "$LAB_DIR/lab.env"
LAB_MODE=${LAB_MODE:-vagrant}
LAB_EDGES=${LAB_EDGES:-2}
LAB_CLOUD=${LAB_CLOUD:-${TUNTERM_CLOUD:-0}}

case $LAB_MODE in
    vagrant)
        if [ -z "${LAB_SSH_CONFIG:-}" ]; then
            LAB_SSH_CONFIG=$(mktemp)
            (cd "$LAB_DIR" && vagrant ssh-config) >"$LAB_SSH_CONFIG"
            export LAB_SSH_CONFIG
        fi
        REMOTE_LAB_DIR=/vagrant-root/vagrant
        ;;
    netns)
        : "${LAB_PREFIX:?LAB_PREFIX (vagrant/standin/run sets it)}"
        : "${LAB_STATE:?LAB_STATE (vagrant/standin/run sets it)}"
        : "${TUNTERM_BIN_DIR:?TUNTERM_BIN_DIR (vagrant/standin/run sets it)}"
        REMOTE_LAB_DIR=$LAB_DIR
        ;;
    *) echo "LAB_MODE is vagrant or netns" >&2; exit 2 ;;
esac

# on HOST COMMAND...: run COMMAND as root on HOST; stdout and status come back.
on() {
    local host=$1
    shift
    case $LAB_MODE in
        vagrant)
            ssh -F "$LAB_SSH_CONFIG" -o LogLevel=ERROR "$host" -- \
                sudo TUNTERM_CONTROL_SOCKET=/run/tunterm/tunterm.sock "$(printf '%q ' "$@")"
            ;;
        netns)
            ip netns exec "$LAB_PREFIX$host" env \
                TUNTERM_CONTROL_SOCKET="$LAB_STATE/$host/tunterm.sock" \
                PATH="$TUNTERM_BIN_DIR:$PATH" "$@"
            ;;
    esac
}

# tt EDGE ARGS...: the tunterm CLI on EDGE, with that edge's control socket.
tt() {
    local host=$1
    shift
    case $LAB_MODE in
        vagrant) on "$host" tunterm "$@" ;;
        netns) on "$host" tunterm "$@" --control-socket "$LAB_STATE/$host/tunterm.sock" ;;
    esac
}

# on_client AP CLIENT COMMAND...: in the client namespace CLIENT behind AP.
on_client() {
    local ap=$1 client=$2
    shift 2
    case $LAB_MODE in
        vagrant) on "$ap" ip netns exec "$client" "$@" ;;
        netns) ip netns exec "$LAB_PREFIX$client" "$@" ;;
    esac
}

# provision HOST SCRIPT ARGS...: a vagrant/provision script on HOST, the way
# the Vagrantfile runs it (VM) or the stand-in (with its environment).
provision() {
    local host=$1 script=$2
    shift 2
    case $LAB_MODE in
        vagrant) on "$host" bash "$REMOTE_LAB_DIR/provision/$script" "$@" ;;
        netns)
            on "$host" env TUNTERM_STANDIN=1 STATE_DIR="$LAB_STATE/$host" \
                TUNTERM_BIN_DIR="$TUNTERM_BIN_DIR" CLIENT_NS_PREFIX="$LAB_PREFIX" \
                UPSTREAM_VLAN_MODE=vlan-host LAB_EDGES="$LAB_EDGES" \
                HOST_MNT_NS="/proc/$$/ns/mnt" \
                bash "$LAB_DIR/provision/$script" "$@"
            ;;
    esac
}

say() { echo "  $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# poll SECONDS COMMAND...: until it succeeds; status 1 when time runs out.
poll() {
    local secs=$1
    shift
    for _ in $(seq $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# Established L2TP sessions on an edge (0 when it does not answer).
sessions_on() {
    tt "$1" stats 2>/dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
except ValueError:
    print(0); sys.exit()
print(sum(1 for t in s.get("tunnels", []) for x in t.get("sessions", []) if x.get("state") == "established"))
' || echo 0
}

# sessions_are HOST N: exactly N established sessions on HOST.
sessions_are() { [ "$(sessions_on "$1")" = "$2" ]; }


# ping_ok AP CLIENT DEST: 3 echo replies out of 3, within 5 s.
ping_ok() {
    on_client "$1" "$2" ping -c 3 -i 0.2 -W 2 -w 5 "$3" >/dev/null
}
