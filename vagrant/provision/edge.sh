#!/usr/bin/env bash
# An edge: tunterm between the AP network and the 802.1Q trunk.
#
#   edge.sh up edge1|edge2     install (VM: the .deb), address the AP-facing
#                              NIC, write edge.json, start tunterm, wait for it
#   edge.sh stop|start NAME    stop tunterm (SIGTERM: StopCCN to every AP, which
#                              move to the other edge at once) / start it again
#
# In a VM: `dpkg -i /vagrant-root/target/debian/tunterm_*.deb` (built on the
# host with packaging/build-deb), /etc/tunterm/edge.json, tunterm.service.
# In the stand-in (TUNTERM_STANDIN=1, TUNTERM_BIN_DIR=target/release): the
# same configuration under STATE_DIR and `tunterm run` in the background.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

action=${1:?usage: edge.sh up|stop|start edge1|edge2}
name=${2:?usage: edge.sh up|stop|start edge1|edge2}
case $name in
    edge1) ip=$EDGE1_IP apnet_mac=$EDGE1_APNET_MAC trunk_mac=$EDGE1_TRUNK_MAC
           v10=$EDGE1_VLAN10_IP v20=$EDGE1_VLAN20_IP ;;
    edge2) ip=$EDGE2_IP apnet_mac=$EDGE2_APNET_MAC trunk_mac=$EDGE2_TRUNK_MAC
           v10=$EDGE2_VLAN10_IP v20=$EDGE2_VLAN20_IP ;;
    *) die "unknown edge $name" ;;
esac

if [ "$STANDIN" = 1 ]; then
    conf_dir=$STATE_DIR
    export TUNTERM_CONTROL_SOCKET=$STATE_DIR/tunterm.sock
else
    conf_dir=/etc/tunterm
    export TUNTERM_CONTROL_SOCKET=/run/tunterm/tunterm.sock
fi
TUNTERM=$(bin tunterm)

start() {
    if [ "$STANDIN" = 1 ]; then
        run_bg tunterm "$TUNTERM" run --config "$conf_dir/edge.json" \
            --control-socket "$TUNTERM_CONTROL_SOCKET" --fast-path off
    else
        systemctl enable tunterm.service
        systemctl restart tunterm.service
    fi
    if ! wait_for 20 "tunterm to answer on $TUNTERM_CONTROL_SOCKET" \
            "$TUNTERM" stats --control-socket "$TUNTERM_CONTROL_SOCKET"; then
        bg_log tunterm
        exit 1
    fi
    log "tunterm running on $name ($ip)"
}

stop() {
    if [ "$STANDIN" = 1 ]; then
        stop_bg tunterm
    else
        systemctl stop tunterm.service
    fi
    log "tunterm stopped on $name"
}

up() {
    if [ "$STANDIN" != 1 ]; then
        pkgs iproute2 ethtool
        local deb
        deb=$(ls -t "$REPO_DIR"/target/debian/tunterm_*_amd64.deb 2>/dev/null | head -n1 || true)
        [ -n "$deb" ] || die "no $REPO_DIR/target/debian/tunterm_*_amd64.deb: run packaging/build-deb on the host, then vagrant reload --provision"
        log "installing $deb"
        # The lab rewrites /etc/tunterm/edge.json and /etc/default/tunterm-agent
        # (conffiles): keep them on a reinstall, never ask.
        DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$deb"
    fi
    [ -x "$TUNTERM" ] || die "$TUNTERM is missing"

    local apif trunkif
    apif=$(if_by_mac "$apnet_mac")
    trunkif=$(if_by_mac "$trunk_mac")
    ip link set "$apif" up
    ip link set "$trunkif" up
    ip addr replace "$ip/$APNET_PREFIX" dev "$apif"
    # Frames for the clients' and the host ports' MACs arrive on the trunk:
    # a VM's NIC (virtio's receive filter) would drop them unless promiscuous.
    ip link set "$trunkif" promisc on
    # tunterm tags and untags in userspace on the trunk: the NIC must not.
    ethtool -K "$trunkif" rxvlan off txvlan off >/dev/null 2>&1 || true

    mkdir -p "$conf_dir"
    cat >"$conf_dir/edge.json" <<JSON
{
  "mxedge": {
    "name": "$name",
    "tunterm_ip_config": {"ip": "$ip", "netmask": "255.255.255.0"},
    "tunterm_port_config": {
      "separate_upstream_downstream": true,
      "downstream_ports": ["0"],
      "upstream_ports": ["1"],
      "upstream_port_vlan_id": 1
    },
    "tunterm_other_ip_configs": {
      "10": {"ip": "$v10", "netmask": "255.255.255.0"},
      "20": {"ip": "$v20", "netmask": "255.255.255.0"}
    },
    "tunterm_dhcpd_config": {
      "enabled": true, "type": "relay", "servers": ["$UP_VLAN20_IP"],
      "10": {"enabled": true, "type": "relay", "servers": ["$UP_VLAN10_IP"]}
    }
  },
  "mxcluster": {
    "name": "vagrant-lab",
    "tunterm_hosts": ["$EDGE1_IP", "$EDGE2_IP"],
    "tunterm_hosts_selection": "ordered",
    "tunterm_ap_subnets": ["${EDGE1_IP%.*}.0/$APNET_PREFIX"]
  },
  "mxtunnels": [{
    "name": "lab",
    "protocol": "udp",
    "vlan_ids": [10, 20],
    "hello_interval": $HELLO_INTERVAL,
    "hello_retries": $HELLO_RETRIES
  }],
  "ports": {"0": "$apif", "1": "$trunkif"}
}
JSON
    "$TUNTERM" check-config "$conf_dir/edge.json" >/dev/null ||
        die "tunterm check-config refused $conf_dir/edge.json"
    start
}

case $action in
    up) up ;;
    stop) stop ;;
    start) start ;;
    *) die "unknown action $action" ;;
esac
