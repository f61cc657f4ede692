#!/usr/bin/env bash
# Ping across the tunnels and VLANs: each client reaches the upstream host
# on its own VLAN (c1 and c3 untagged → VLAN 10, c2 tagged 20 by ap1), a
# client behind the other AP on the same VLAN (c1 → c3: trunk-less, edge
# switching between two sessions), and one on the other VLAN (c1 → c2,
# routed by the upstream host between its VLAN 10 and 20 interfaces).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check() {
    local ap=$1 client=$2 dest=$3 what=$4
    ping_ok "$ap" "$client" "$dest" || fail "ping $client ($ap) → $dest ($what): no replies"
    say "ok: $client ($ap) → $dest ($what)"
}
check ap1 c1 "$UP_VLAN10_IP" "upstream, VLAN 10"
check ap1 c2 "$UP_VLAN20_IP" "upstream, VLAN 20 (tagged by the AP)"
check ap2 c3 "$UP_VLAN10_IP" "upstream, VLAN 10"
check ap1 c1 192.168.10.13 "c3 behind ap2, same VLAN"
check ap1 c1 192.168.20.12 "c2, VLAN 20, routed upstream"
check ap1 c1 "$EDGE1_VLAN10_IP" "the edge's own address on VLAN 10 (host port)"
