/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xdp_pass: every packet on to the kernel stack, unchanged.
 *
 * Attached to the receiving end of a veth so that native XDP_REDIRECTs
 * into its peer are delivered: a veth only takes redirected frames when
 * the receiving side runs an XDP program (or has GRO on). The lab puts it
 * on the upstream host's end of the trunk.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_PASS;
}

char _license[] SEC("license") = "Apache-2.0";
