#!/usr/bin/env bash
# The upstream host: the other end of the edges' 802.1Q trunk. One address
# per VLAN (the clients' gateway, routing between VLANs 10 and 20), dnsmasq
# serving both VLANs' pools to the edges' DHCP relays, a multicast sender.
#
#   upstream.sh up
#
# UPSTREAM_VLAN_MODE says how the VLAN sub-interfaces are made:
#   8021q      (default, the VM) the kernel's: `ip link add link eth1 name
#              eth1.10 type vlan id 10`
#   vlan-host  (the netns stand-in: the machine's kernel has no 8021q) the
#              lab's userspace tagger, `tunterm-lab vlan-host`, which gives
#              one TAP per VLAN (v10, v20) and tags/untags on the trunk.
# Everything above the VLAN interfaces (addresses, dnsmasq, routing, the
# sender) is the same in both.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "${1:-}" = up ] || die "usage: upstream.sh up"
mode=${UPSTREAM_VLAN_MODE:-8021q}

pkgs iproute2 dnsmasq-base python3 iputils-ping
trunk=$(if_by_mac "$UP_TRUNK_MAC")
ip link set "$trunk" up
ethtool -K "$trunk" rxvlan off txvlan off >/dev/null 2>&1 || true

vlan_if() {
    case $mode in
        8021q) echo "$trunk.$1" ;;
        vlan-host) echo "v$1" ;;
    esac
}

case $mode in
    8021q)
        modprobe 8021q
        for vid in 10 20; do
            ip link del "$trunk.$vid" 2>/dev/null || true
            ip link add link "$trunk" name "$trunk.$vid" type vlan id "$vid"
        done
        ip addr add "$UP_VLAN10_IP/24" dev "$(vlan_if 10)"
        ip addr add "$UP_VLAN20_IP/24" dev "$(vlan_if 20)"
        ;;
    vlan-host)
        # It makes the TAPs and puts the addresses on them.
        run_bg vlan-host "$(bin tunterm-lab)" vlan-host --trunk "$trunk" \
            --vlan "10=$UP_VLAN10_IP/24" --vlan "20=$UP_VLAN20_IP/24"
        wait_for 10 "vlan-host's v10 and v20" ip -4 addr show dev v20 ||
            { bg_log vlan-host; exit 1; }
        ;;
    *) die "UPSTREAM_VLAN_MODE is 8021q or vlan-host, not $mode" ;;
esac
for vid in 10 20; do
    ip link set "$(vlan_if "$vid")" up
done
# The clients' router between VLANs 10 and 20.
sysctl -qw net.ipv4.ip_forward=1

run_bg lab-dnsmasq dnsmasq --keep-in-foreground --no-daemon --conf-file=/dev/null \
    --no-resolv --no-hosts --port=0 --user=root --log-dhcp --log-facility=- \
    --dhcp-leasefile="$STATE_DIR/dnsmasq.leases" --pid-file="$STATE_DIR/dnsmasq.pid" \
    --dhcp-range="$DHCP_RANGE10,255.255.255.0,5m" \
    --dhcp-range="$DHCP_RANGE20,255.255.255.0,5m"
run_bg lab-mcast-send python3 "$LAB_DIR/provision/mcast-send.py" \
    "$UP_VLAN10_IP" "$MCAST_GROUP" "$MCAST_PORT" 0.5
log "upstream: $(vlan_if 10) $UP_VLAN10_IP, $(vlan_if 20) $UP_VLAN20_IP ($mode), dnsmasq, multicast to $MCAST_GROUP:$MCAST_PORT"
