#!/usr/bin/env bash
# DHCP relay: udhcpc in a client namespace asks; tunterm relays (giaddr =
# its VLAN address, option 82) to dnsmasq upstream, which leases from the
# VLAN's pool; the reply comes back down the tunnel. udhcpc's script only
# records the lease (the client keeps its static address; it never touches
# /etc/resolv.conf: the namespace has its own, see ap.sh).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lease() {
    local ap=$1 client=$2 pool=$3 server=$4 out
    local script=/tmp/tunterm-lab-udhcpc-$$.sh
    # The script runs inside the AP host (VM or namespace): write it there.
    on "$ap" sh -c "printf '%s\n' '#!/bin/sh' '[ \"\$1\" = bound ] && echo \"lease \$ip \$serverid\"' 'exit 0' > $script && chmod +x $script"
    out=$(on_client "$ap" "$client" udhcpc -f -q -n -t 6 -T 2 -i eth0 -s "$script" 2>&1) || true
    on "$ap" rm -f "$script"
    local got
    got=$(echo "$out" | awk '/^lease /{print $2, $3}' | tail -n1)
    [ -n "$got" ] || fail "$client ($ap): no lease from the relay; udhcpc said: $out"
    local ip=${got% *} sid=${got#* }
    local lo=${pool%,*} hi=${pool#*,}
    [ "${ip%.*}" = "${lo%.*}" ] && [ "${ip##*.}" -ge "${lo##*.}" ] && [ "${ip##*.}" -le "${hi##*.}" ] ||
        fail "$client ($ap): lease $ip is not from the pool $pool"
    [ "$sid" = "$server" ] || fail "$client ($ap): lease from $sid, not $server"
    say "ok: $client ($ap) leased $ip from $sid (pool $pool, relayed)"
}
lease ap2 c3 "$DHCP_RANGE10" "$UP_VLAN10_IP"
lease ap1 c2 "$DHCP_RANGE20" "$UP_VLAN20_IP"
# The edge relayed them: both exchanges (DISCOVER/OFFER, REQUEST/ACK)
# delivered to the clients through their tunnels.
tt edge1 stats | python3 -c '
import json, sys
r = json.load(sys.stdin)["services"]["dhcp_relay"]
print("  edge1 dhcp_relay: relayed %d, server_rx %d, delivered %d" % (r["relayed"], r["server_rx"], r["delivered"]))
sys.exit(0 if r["delivered"] >= 4 else 1)
' || fail "edge1 delivered fewer than 4 relayed replies"
