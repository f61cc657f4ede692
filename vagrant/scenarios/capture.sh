#!/usr/bin/env bash
# Capture: `tunterm capture -w -` on the edge, its pcapng streamed back over
# the command channel (ssh for the VMs: the same pipe that feeds
# `wireshark -k -i -`), read by tshark here: the clients' pings must be on
# the trunk tagged with their VLAN.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v tshark >/dev/null || fail "tshark is not installed on this machine (apt-get install tshark)"
pcap=$(mktemp --suffix=.pcapng)
err=$(mktemp)
trap 'rm -f "$pcap" "$err"' EXIT

tt edge1 capture -i trunk -f "vlan and icmp" -c 12 --duration 20 -w - >"$pcap" 2>"$err" &
cap=$!
captures_running() {
    tt edge1 stats | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["captures"] else 1)'
}
poll 10 captures_running || { kill "$cap" 2>/dev/null; fail "the capture did not start: $(cat "$err")"; }
ping_ok ap1 c1 "$UP_VLAN10_IP" || fail "c1 → $UP_VLAN10_IP during the capture"
ping_ok ap1 c2 "$UP_VLAN20_IP" || fail "c2 → $UP_VLAN20_IP during the capture"
# 12 frames: 3 requests and 3 replies per ping: it ends by itself.
wait "$cap" || fail "tunterm capture failed: $(cat "$err")"

fields=$(tshark -r "$pcap" -Y icmp -T fields -e vlan.id -e ip.src -e ip.dst -e icmp.type 2>/dev/null | sort | uniq -c)
echo "$fields" | sed 's/^/    /'
grep -Eq "^ *3 10	192\.168\.10\.11	$UP_VLAN10_IP	8$" <<<"$fields" ||
    fail "no 3 echo requests from c1 tagged 10 on the trunk"
grep -Eq "^ *3 10	$UP_VLAN10_IP	192\.168\.10\.11	0$" <<<"$fields" ||
    fail "no 3 echo replies to c1 tagged 10 on the trunk"
grep -Eq "^ *3 20	192\.168\.20\.12	$UP_VLAN20_IP	8$" <<<"$fields" ||
    fail "no 3 echo requests from c2 tagged 20 on the trunk"
say "ok: pcapng of $(stat -c %s "$pcap") bytes from edge1's trunk: c1's pings tagged 10, c2's tagged 20 (tshark)"
