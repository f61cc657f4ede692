#!/usr/bin/env bash
# tunterm-agent on an edge, registered with the lab's cloud emulator.
#
#   agent.sh up edge1|edge2 CLAIM_CODE < cloud-ca.pem
#
# In a VM: the .deb's tunterm-agent.service, its arguments in
# /etc/default/tunterm-agent. In the stand-in: the same arguments, the
# agent in the background, its state under STATE_DIR.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "${1:-}" = up ] || die "usage: agent.sh up EDGE CLAIM_CODE < ca.pem"
name=${2:?edge}
claim=${3:?claim code}
if [ "$STANDIN" = 1 ]; then
    conf_dir=$STATE_DIR
    sock=$STATE_DIR/tunterm.sock
else
    conf_dir=/etc/tunterm
    sock=/run/tunterm/tunterm.sock
fi
cat >"$conf_dir/cloud-ca.pem"
args="--cloud https://$CLOUD_IP:8443 --claim-code $claim --ca $conf_dir/cloud-ca.pem --stats-interval 5"
if [ "$STANDIN" = 1 ]; then
    mkdir -p "$STATE_DIR/agent"
    # shellcheck disable=SC2086 # $args: the words of TUNTERM_AGENT_ARGS
    run_bg tunterm-agent "$(bin tunterm-agent)" --state-dir "$STATE_DIR/agent" \
        --control-socket "$sock" --daemon-config "$conf_dir/edge.json" $args
else
    echo "TUNTERM_AGENT_ARGS=\"$args\"" >/etc/default/tunterm-agent
    systemctl enable tunterm-agent.service
    systemctl restart tunterm-agent.service
fi
log "tunterm-agent on $name, to https://$CLOUD_IP:8443 (claim code given, not logged)"
