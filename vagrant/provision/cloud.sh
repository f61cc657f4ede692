#!/usr/bin/env bash
# The cloud: tunterm-cloud, the Mist-shaped emulator, on the AP network.
#
#   cloud.sh up                 start it (its CA, operator token and seed org
#                               are made at the first start, kept after)
#   cloud.sh info               its started.json (url, org_id, mxedge_id,
#                               claim_code, ...)
#   cloud.sh ca                 its CA certificate (PEM), for the agents
#   cloud.sh edge-status ID     the mxedge's `status` in the operator API
#                               (stats/mxedges/ID): connected / disconnected
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$STANDIN" = 1 ]; then
    data=$STATE_DIR/cloud-data
else
    data=/var/lib/tunterm-cloud
fi

up() {
    pkgs iproute2 python3
    local cloud apif
    cloud=$(bin tunterm-cloud)
    [ -x "$cloud" ] || die "$cloud is missing: cargo build --release -p tunterm-cloud on the host"
    apif=$(if_by_mac "$CLOUD_APNET_MAC")
    ip link set "$apif" up
    ip addr replace "$CLOUD_IP/$APNET_PREFIX" dev "$apif"
    rm -f "$data/started.json"
    run_bg tunterm-cloud "$cloud" --data-dir "$data" --listen "0.0.0.0:8443" --san "$CLOUD_IP"
    wait_for 20 "tunterm-cloud's started.json" test -s "$data/started.json" ||
        { bg_log tunterm-cloud; exit 1; }
    log "tunterm-cloud on https://$CLOUD_IP:8443 (data in $data)"
}

edge_status() {
    python3 - "$data" "$1" <<'PY'
import json, ssl, sys, urllib.request
data, edge = sys.argv[1], sys.argv[2]
info = json.load(open(f"{data}/started.json"))
token = open(info["operator_token_file"]).read().strip()
ctx = ssl.create_default_context(cafile=info["ca"])
url = f"https://127.0.0.1:8443/api/v1/orgs/{info['org_id']}/stats/mxedges/{edge}"
req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
    print(json.load(r).get("status"))
PY
}

case ${1:-} in
    up) up ;;
    info) cat "$data/started.json" ;;
    ca) cat "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca"])' "$data/started.json")" ;;
    edge-status) edge_status "${2:?mxedge id}" ;;
    *) die "usage: cloud.sh up|info|ca|edge-status ID" ;;
esac
