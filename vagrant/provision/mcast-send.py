#!/usr/bin/env python3
"""The upstream multicast sender: one UDP datagram to GROUP:PORT every
interval, out of the interface holding SOURCE (the upstream host's VLAN-10
address), TTL 1. Usage: mcast-send.py SOURCE GROUP PORT [INTERVAL]."""
import socket
import sys
import time

source, group, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
s.bind((source, 0))
n = 0
while True:
    n += 1
    try:
        s.sendto(b"tunterm-lab mcast %d" % n, (group, port))
    except OSError as e:  # the VLAN interface not up yet: try again
        print("send:", e, flush=True)
    time.sleep(interval)
