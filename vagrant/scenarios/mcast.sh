#!/usr/bin/env bash
# Multicast: the upstream host's sender streams to MCAST_GROUP on VLAN 10;
# a client behind an AP joins the group (its kernel sends the IGMP report up
# the tunnel) and must receive the stream through the edge.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=$(on_client ap1 c1 python3 -c '
import socket, struct, sys
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")))
s.settimeout(10)
data, src = s.recvfrom(2048)
print(src[0], data.decode())
' "$MCAST_GROUP" "$MCAST_PORT" 2>&1) || fail "c1 (ap1): nothing from $MCAST_GROUP:$MCAST_PORT in 10 s: $out"
case $out in
    "$UP_VLAN10_IP tunterm-lab mcast "*) say "ok: c1 (ap1) got $MCAST_GROUP from the upstream sender: $out" ;;
    *) fail "c1 (ap1): unexpected datagram: $out" ;;
esac
