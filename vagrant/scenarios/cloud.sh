#!/usr/bin/env bash
# The cloud (LAB_CLOUD=1; VMs: TUNTERM_CLOUD=1): edge2's tunterm-agent
# registers with the emulator by the seed mxedge's claim code and holds its
# session: the operator API shows the edge connected. On edge2, which holds
# no tunnel by now: the cloud's seed configuration may replace the lab's.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${LAB_CLOUD:-0}" != 1 ]; then
    say "skipped: no cloud (LAB_CLOUD=1 / TUNTERM_CLOUD=1)"
    exit 0
fi
edge=edge2
[ "$LAB_EDGES" = 2 ] || edge=edge1
info=$(provision cloud cloud.sh info)
field() { echo "$info" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
claim=$(field claim_code)
mxedge=$(field mxedge_id)
provision cloud cloud.sh ca | provision "$edge" agent.sh up "$edge" "$claim"
connected() { [ "$(provision cloud cloud.sh edge-status "$mxedge")" = connected ]; }
poll 30 connected || fail "the cloud does not show $edge ($mxedge) connected after 30 s: $(provision cloud cloud.sh edge-status "$mxedge" 2>&1)"
say "ok: $edge's agent registered by the claim code and connected: mxedge $mxedge"
