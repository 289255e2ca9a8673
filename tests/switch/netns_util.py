"""Helpers shared by the switch tests that build network namespaces."""

import subprocess

# ping(8) may be missing; this sends ICMP echo requests from a raw socket and
# exits 0 after `count` matching replies (bounded by a timeout per echo).
PING = r"""
import os, socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
def csum(b):
    b += b"\0" * (len(b) & 1)
    n = sum(struct.unpack(f"!{len(b)//2}H", b)); n = (n >> 16) + (n & 0xFFFF); n += n >> 16
    return ~n & 0xFFFF
ident, got = os.getpid() & 0xFFFF, 0
for seq in range(count):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"netstore" * 4
    s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (dst, 0))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        data, _ = s.recvfrom(2048)
        t, _c, _k, i, q = struct.unpack_from("!BBHHH", data, (data[0] & 15) * 4)
        if t == 0 and i == ident and q == seq:
            got += 1
            break
print(f"{got} received")
sys.exit(0 if got == count else 1)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)
