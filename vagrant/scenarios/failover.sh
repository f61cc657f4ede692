#!/usr/bin/env bash
# Failover between the two edges: tunterm stops on edge1 (StopCCN to its
# APs); both APs move to edge2 (next in tunterm_hosts) and the clients reach
# upstream again. edge1 comes back; `tunterm preempt` on edge2 sends the APs
# home to edge1, their preferred edge.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$LAB_EDGES" != 2 ]; then
    say "skipped: one edge (LAB_EDGES=$LAB_EDGES)"
    exit 0
fi
sessions_are edge1 2 || fail "edge1 should hold both APs' sessions before the failover (has $(sessions_on edge1))"

t0=$SECONDS
provision edge1 edge.sh stop edge1
poll 20 sessions_are edge2 2 || fail "the APs did not move to edge2 within 20 s (edge2 has $(sessions_on edge2))"
poll 10 ping_ok ap1 c1 "$UP_VLAN10_IP" || fail "c1 cannot reach upstream through edge2"
poll 10 ping_ok ap1 c2 "$UP_VLAN20_IP" || fail "c2 cannot reach upstream through edge2"
say "ok: edge1 down → both APs on edge2, clients through, in $((SECONDS - t0)) s"

provision edge1 edge.sh start edge1
report=$(tt edge2 preempt)
say "preempt on edge2: $report"
for ap in "$AP1_NAME" "$AP2_NAME"; do
    grep -q "$ap" <<<"$report" || fail "preempt on edge2 did not close $ap"
done
poll 20 sessions_are edge1 2 || fail "the APs did not come back to edge1 within 20 s (edge1 has $(sessions_on edge1))"
poll 10 ping_ok ap1 c1 "$UP_VLAN10_IP" || fail "c1 cannot reach upstream after the APs came back"
say "ok: edge1 back, preempt → both APs home on edge1, clients through"
