// SPDX-License-Identifier: Apache-2.0
/*
 * bench_redirect: case 1 of the lab benchmark, the physical limit of the
 * lab's veths. Every frame is redirected, untouched and unparsed, to the
 * interface `bench_ports` maps its ingress interface to (both ways between
 * the AP-facing veth and the trunk veth); a frame from an unmapped
 * interface passes.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} bench_ports SEC(".maps");

SEC("xdp")
int bench_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bench_ports, ctx->ingress_ifindex, XDP_PASS);
}

char _license[] SEC("license") = "Apache-2.0";
