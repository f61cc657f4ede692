#!/usr/bin/env bash
# An AP: tunterm-apsim, a real L2TPv3 initiator, bridging real client
# network namespaces (veth pairs) into its session.
#
#   ap.sh up ap1|ap2
#
# Clients come from lab.env (AP1_CLIENTS: NAME:ADDR/LEN:TAG); each is a
# namespace (CLIENT_NS_PREFIX + NAME; the stand-in sets a prefix, since
# namespace names are machine-wide) with eth0 holding the address and a
# default route via the upstream host on its VLAN. The AP knows both edges
# (the cluster's tunterm_hosts, ordered: edge1 first).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

action=${1:?usage: ap.sh up ap1|ap2}
ap=${2:?usage: ap.sh up ap1|ap2}
[ "$action" = up ] || die "unknown action $action"
case $ap in
    ap1) ip=$AP1_IP mac=$AP1_APNET_MAC clients=$AP1_CLIENTS apname=$AP1_NAME ;;
    ap2) ip=$AP2_IP mac=$AP2_APNET_MAC clients=$AP2_CLIENTS apname=$AP2_NAME ;;
    *) die "unknown AP $ap" ;;
esac
prefix=${CLIENT_NS_PREFIX:-}

pkgs iproute2 ethtool iputils-ping udhcpc python3
APSIM=$(bin tunterm-apsim)
[ -x "$APSIM" ] || die "$APSIM is missing: cargo build --release -p tunterm-lab on the host (the VM runs the host's build)"

apif=$(if_by_mac "$mac")
ip link set "$apif" up
ip addr replace "$ip/$APNET_PREFIX" dev "$apif"

bridges=()
for c in $clients; do
    IFS=: read -r cname caddr ctag <<<"$c"
    ns=$prefix$cname
    netns_del "$ns"
    ip link del "$cname" 2>/dev/null || true
    netns_add "$ns"
    ip link add "$cname" type veth peer name eth0 netns "$ns"
    ip link set "$cname" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" addr add "$caddr" dev eth0
    # The gateway: the upstream host's address on the client's subnet (.1).
    ip -n "$ns" route add default via "${caddr%.*}.1"
    # apsim reads client frames with AF_PACKET: with TX checksum offload
    # they would enter the tunnel with unfinished checksums.
    ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
    # A DHCP client in the namespace must not rewrite the machine's resolver.
    mkdir -p "/etc/netns/$ns"
    echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf"
    if [ "$ctag" = - ]; then
        bridges+=("bridge=$cname")
    else
        bridges+=("bridge=$cname:$ctag")
    fi
done
spec="name=$apname,ip=$ip$(printf ',%s' "${bridges[@]}")"

edges=$EDGE1_IP
[ "${LAB_EDGES:-2}" = 2 ] && edges="$EDGE1_IP,$EDGE2_IP"
run_bg tunterm-apsim "$APSIM" --edge "$edges" --hosts-selection ordered \
    --ap "$spec" --hello-interval "$HELLO_INTERVAL" --hello-retries "$HELLO_RETRIES" \
    --events --control-socket "$STATE_DIR/apsim.sock"
if ! wait_for 10 "tunterm-apsim's socket" test -S "$STATE_DIR/apsim.sock"; then
    bg_log tunterm-apsim
    exit 1
fi
log "$ap ($apname, $ip): clients $clients, edges $edges"
