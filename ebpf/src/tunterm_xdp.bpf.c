// SPDX-License-Identifier: Apache-2.0
/*
 * Both XDP programs in one object, so they share one set of maps:
 * xdp_ap_rx (AP-facing port) and xdp_trunk_rx (trunk port). This is the
 * object tunterm_ebpf::FastPath loads.
 */
#include "xdp_ap_rx.bpf.c"
#include "xdp_trunk_rx.bpf.c"
