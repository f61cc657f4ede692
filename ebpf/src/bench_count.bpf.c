// SPDX-License-Identifier: Apache-2.0
/*
 * bench_count: the receiver of the lab benchmark (benches/, `labbench`).
 *
 * Counts every frame that reaches the interface in a per-CPU counter and
 * drops it, except what the lab's own endpoints must still see: ARP, IPv6
 * (neighbour discovery) and L2TP control messages (UDP port 1701 either
 * way, T bit set; over IP, protocol 115 with session id 0), so simulated
 * APs keep their tunnels while their data is
 * counted. Counting in XDP makes the receiver cost almost nothing, and a
 * program on this end is also what lets a native XDP_REDIRECT into its veth
 * peer deliver at all.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define L2TP_PORT 1701
#define L2TP_T_BIT 0x80

/* 0: frames counted, 1: their bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} bench_counters SEC(".maps");

static __always_inline int lab_control(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 1;
	if (eth->h_proto == bpf_htons(ETH_P_ARP) || eth->h_proto == bpf_htons(ETH_P_IPV6))
		return 1;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return 0;
	if (ip->protocol == IPPROTO_L2TP) {
		__u32 *sid = (void *)(ip + 1);
		return (void *)(sid + 1) <= data_end && *sid == 0;
	}
	if (ip->protocol != IPPROTO_UDP)
		return 0;
	struct udphdr *udp = (void *)(ip + 1);
	__u8 *l2tp = (void *)(udp + 1);
	if ((void *)(l2tp + 1) > data_end)
		return 0;
	if (udp->dest != bpf_htons(L2TP_PORT) && udp->source != bpf_htons(L2TP_PORT))
		return 0;
	return (*l2tp & L2TP_T_BIT) != 0;
}

SEC("xdp")
int bench_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (lab_control(data, data_end))
		return XDP_PASS;
	__u32 key = 0;
	__u64 *packets = bpf_map_lookup_elem(&bench_counters, &key);
	if (packets)
		*packets += 1;
	key = 1;
	__u64 *bytes = bpf_map_lookup_elem(&bench_counters, &key);
	if (bytes)
		*bytes += (__u64)(data_end - data);
	return XDP_DROP;
}

char _license[] SEC("license") = "Apache-2.0";
