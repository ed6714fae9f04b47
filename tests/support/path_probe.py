"""What the network answers a TCP connection, seen without the tool under test.

Run as root inside the lab's client namespace: `path_probe.py PORT ADDRESS[@TTL]...`. For each
address it connects with the kernel's own TCP (with the IP TTL / hop limit set when @TTL is
given) and records, from raw sockets opened beforehand, every TCP segment and ICMP error that
answers that connection: who sent it, its TTL or hop limit, its kind. Prints one JSON object per
line. It proves the chain lab's premises (who answers, with which TTL) independently of
whitelist-audit's own raw engine. Every wait is bounded.
"""

import errno
import json
import select
import socket
import struct
import sys
import time

# Seconds for one connection and its answers. Over IPv6 an ICMP error that answers the first SYN
# can arrive while connect() still holds the socket (TcpExtLockDroppedIcmps): the kernel then
# fails the connection only at the second ICMP, the one answering the SYN retransmitted after 1 s.
WAIT = 1.5


def raw_sockets(family):
    """A raw TCP and a raw ICMP socket of `family`, both non-blocking."""
    if family == socket.AF_INET:
        icmp = socket.IPPROTO_ICMP
    else:
        icmp = socket.IPPROTO_ICMPV6
    sockets = [socket.socket(family, socket.SOCK_RAW, proto) for proto in (socket.IPPROTO_TCP, icmp)]
    for s in sockets:
        s.setblocking(False)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    return sockets


def receive(s, family):
    """One packet: (source, ttl, transport bytes)."""
    data, ancillary, _, source = s.recvmsg(65535, 64)
    if family == socket.AF_INET:
        ihl = (data[0] & 0x0F) * 4
        return source[0], data[8], data[ihl:]
    ttl = None
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
            ttl = struct.unpack("i", value[:4])[0]
    return source[0], ttl, data


def tcp_answer(source, ttl, segment, address, port, local_port):
    """A segment answering our SYN: SYN-ACK or RST."""
    sport, dport = struct.unpack("!HH", segment[:4])
    if source != address or sport != port or dport != local_port:
        return None
    flags = segment[13]
    if flags & 0x04:
        kind = "rst"
    elif (flags & 0x12) == 0x12:
        kind = "syn_ack"
    else:
        return None  # the connection's data (an SSH server speaks first), not an answer to the SYN
    return {"kind": kind, "from": source, "ttl": ttl}


def icmp_answer(source, ttl, message, family, address, port, local_port):
    """An ICMP error quoting our connection's SYN."""
    kind, code = message[0], message[1]
    quoted = message[8:]
    if family == socket.AF_INET:
        if kind not in (3, 11) or len(quoted) < 20:
            return None
        ihl = (quoted[0] & 0x0F) * 4
        destination = socket.inet_ntop(socket.AF_INET, quoted[16:20])
        transport = quoted[ihl:]
    else:
        if kind not in (1, 3) or len(quoted) < 40:
            return None
        destination = socket.inet_ntop(socket.AF_INET6, quoted[24:40])
        transport = quoted[40:]
    if len(transport) < 4:
        return None
    sport, dport = struct.unpack("!HH", transport[:4])
    if destination != address or sport != local_port or dport != port:
        return None
    return {"kind": "icmp", "type": kind, "code": code, "from": source, "ttl": ttl}


def probe(address, port, ttl):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raws = raw_sockets(family)
    s = socket.socket(family, socket.SOCK_STREAM)
    if ttl is not None:
        if family == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    s.setblocking(False)
    s.connect_ex((address, port))
    local_port = s.getsockname()[1]
    outcome = None
    answers = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        writable = [s] if outcome is None else []
        ready_r, ready_w, _ = select.select(raws, writable, [], max(0.0, deadline - time.monotonic()))
        if ready_w:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            outcome = "open" if err == 0 else errno.errorcode.get(err, str(err))
        for raw in ready_r:
            source, hops, data = receive(raw, family)
            if raw is raws[0]:
                answer = tcp_answer(source, hops, data, address, port, local_port)
            else:
                answer = icmp_answer(source, hops, data, family, address, port, local_port)
            if answer is not None and answer not in answers:
                answers.append(answer)
    s.close()
    for raw in raws:
        raw.close()
    return {"address": address, "ttl": ttl, "outcome": outcome or "timeout", "answers": answers}


def main():
    port = int(sys.argv[1])
    for spec in sys.argv[2:]:
        address, _, ttl = spec.partition("@")
        print(json.dumps(probe(address, port, int(ttl) if ttl else None)), flush=True)


if __name__ == "__main__":
    main()
