"""DNS trouble (issue #12): the delivery agent's resolver (c-ares,
common/glue/dns.c) against a misbehaving DNS server written for these
tests (UDP and TCP on one port, answers scripted per name): SERVFAIL, no
answer at all, truncated UDP answers (TC=1) whose full answer comes over
TCP, CNAME chains and loops, an MX naming a CNAME, MX records naming an
address literal, an MX host whose address lookup fails, NXDOMAIN; then a
resolver that is down, and an MX pointing back at postino itself.

Temporary failures defer with 4.4.3 and are retried (the same message is
delivered once the DNS answers); only NXDOMAIN (and null MX, see
test_delivery_client.py) bounce. Receivers are the aiosmtpd sink on
127.0.0.1-5 (port smtp_port)."""
import asyncio
import os
import re
import socket
import struct
import threading

import pytest

import postino_harness as h

SENDER = "s@sender.test"
T_A, T_CNAME, T_MX, T_AAAA = 1, 5, 15, 28


def _name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _rr(name, rtype, rdata, ttl=60):
    return _name(name) + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


class BadDns:
    """A DNS server for the tests, on 127.0.0.1:port over UDP and TCP.
    zone maps a lower-case name to a dict:
      "MX": [(pref, target)], "A": [ip], "CNAME": target,
      "servfail": True    answer SERVFAIL to every query for the name
      "drop": True        never answer (the client times out)
      "tc": True          over UDP: an empty answer with TC=1; TCP answers
    A name not in the zone is NXDOMAIN (authoritative). CNAMEs are followed
    inside the zone as a recursive server would, at most 8 deep (a loop
    comes back as the CNAMEs seen). queries counts (proto, name, type)."""

    def __init__(self, zone):
        self.zone = {k.lower(): v for k, v in zone.items()}
        self.queries = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = None

    # -- answers
    def _records(self, qname, qtype):
        out, name, seen = [], qname, 0
        while seen < 8:
            entry = self.zone.get(name)
            if entry is None:
                return out, (3 if not out else 0)
            if "CNAME" in entry and qtype != T_CNAME:
                out.append(_rr(name, T_CNAME, _name(entry["CNAME"])))
                name = entry["CNAME"].lower()
                seen += 1
                continue
            if qtype == T_MX:
                for pref, target in entry.get("MX", []):
                    out.append(_rr(name, T_MX, struct.pack(">H", pref) + _name(target)))
            elif qtype == T_A:
                for ip in entry.get("A", []):
                    out.append(_rr(name, T_A, socket.inet_aton(ip)))
            return out, 0
        return out, 0

    def answer(self, msg, proto):
        qid, flags = struct.unpack(">HH", msg[:4])
        off, labels = 12, []
        while msg[off]:
            labels.append(msg[off + 1:off + 1 + msg[off]].decode(errors="replace"))
            off += 1 + msg[off]
        qtype = struct.unpack(">H", msg[off + 1:off + 3])[0]
        question = msg[12:off + 5]
        qname = ".".join(labels).lower()
        with self.lock:
            self.queries.append((proto, qname, qtype))
            entry = self.zone.get(qname, {})
        if entry.get("drop"):
            return None
        rd = flags & 0x0100
        head = 0x8000 | 0x0400 | rd | 0x0080         # QR AA RD RA
        if entry.get("servfail"):
            return struct.pack(">HHHHHH", qid, (head & ~0x0400) | 2, 1, 0, 0, 0) + question
        if entry.get("tc") and proto == "udp":
            return struct.pack(">HHHHHH", qid, head | 0x0200, 1, 0, 0, 0) + question
        answers, rcode = self._records(qname, qtype)
        return struct.pack(">HHHHHH", qid, head | rcode, 1, len(answers), 0, 0) + \
            question + b"".join(answers)

    # -- transport
    class _Udp(asyncio.DatagramProtocol):
        def __init__(self, srv):
            self.srv = srv

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            try:
                out = self.srv.answer(data, "udp")
            except (IndexError, struct.error):
                return
            if out is not None:
                self.transport.sendto(out, addr)

    async def _tcp(self, reader, writer):
        try:
            while True:
                ln = struct.unpack(">H", await reader.readexactly(2))[0]
                out = self.answer(await reader.readexactly(ln), "tcp")
                if out is None:
                    continue
                writer.write(struct.pack(">H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, OSError, IndexError, struct.error):
            pass
        finally:
            writer.close()

    def start(self):
        self.thread.start()
        for _ in range(20):
            port = h.free_port(socket.SOCK_DGRAM)
            try:
                fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(
                    self._tcp, "127.0.0.1", port), self.loop)
                self.tcp = fut.result(5)
                fut = asyncio.run_coroutine_threadsafe(self.loop.create_datagram_endpoint(
                    lambda: BadDns._Udp(self), local_addr=("127.0.0.1", port)), self.loop)
                self.udp, _ = fut.result(5)
                self.port = port
                return self
            except OSError:
                continue
        raise RuntimeError("no free port for the DNS server")

    def stop(self):
        async def close():
            self.tcp.close()
            self.udp.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def set(self, name, entry):
        with self.lock:
            self.zone[name.lower()] = entry

    def asked(self, proto, name):
        with self.lock:
            return [q for q in self.queries if q[0] == proto and q[1] == name.lower()]


ZONE = {
    "sender.test": {"MX": [(10, "mx.sender.test")]},
    "mx.sender.test": {"A": ["127.0.0.5"]},
    # delivered
    "tc.test": {"MX": [(10, "mx.tc.test")], "tc": True},
    "mx.tc.test": {"A": ["127.0.0.2"]},
    "cname.test": {"MX": [(10, "alias.cname.test")]},
    "alias.cname.test": {"CNAME": "hop.cname.test"},
    "hop.cname.test": {"CNAME": "real.cname.test"},
    "real.cname.test": {"A": ["127.0.0.3"]},
    "mxipmix.test": {"MX": [(10, "127.0.0.4"), (20, "good.mxipmix.test")]},
    "good.mxipmix.test": {"A": ["127.0.0.2"]},
    # deferred (4.4.3)
    "servfail.test": {"servfail": True},
    "timeout.test": {"drop": True},
    "mxservfail.test": {"MX": [(10, "sf.mxservfail.test")]},
    "sf.mxservfail.test": {"servfail": True},
    "cnameloop.test": {"MX": [(10, "one.cnameloop.test")]},
    "one.cnameloop.test": {"CNAME": "two.cnameloop.test"},
    "two.cnameloop.test": {"CNAME": "one.cnameloop.test"},
    "mxip.test": {"MX": [(10, "127.0.0.4")]},
    "mxipbr.test": {"MX": [(10, "[127.0.0.4]")]},
    # bounced: nx.test is not in the zone at all
    "mxnx.test": {"MX": [(10, "nohost.mxnx.test")]},
}

# rcpt domain -> (status, dsn, reason regex, receiving sink address or None)
EXPECT = {
    "tc.test": ("sent", "2.0.0", r"250 ", "127.0.0.2"),
    "cname.test": ("sent", "2.0.0", r"250 ", "127.0.0.3"),
    "mxipmix.test": ("sent", "2.0.0", r"250 ", "127.0.0.2"),
    "servfail.test": ("deferred", "4.4.3", r"name=servfail\.test type=MX: Host not found, try again",
                      None),
    "timeout.test": ("deferred", "4.4.3", r"name=timeout\.test type=MX: Host not found, try again",
                     None),
    "mxservfail.test": ("deferred", "4.4.3",
                        r"name=sf\.mxservfail\.test type=A: Host not found, try again", None),
    "cnameloop.test": ("deferred", "4.4.3", r"one\.cnameloop\.test", None),
    "mxip.test": ("deferred", "4.4.3", r"numeric|[Mm]alformed", None),
    "mxipbr.test": ("deferred", "4.4.3", r"numeric|[Mm]alformed", None),
    "nx.test": ("bounced", "5.4.4", r"name=nx\.test type=MX: Host not found\)", None),
    "mxnx.test": ("bounced", "5.4.4", r"name=nohost\.mxnx\.test type=A: Host not found\)", None),
}


@pytest.fixture
def baddns():
    srv = BadDns(ZONE).start()
    yield srv
    srv.stop()


def _status(p, rcpt, status, timeout=60):
    return p.wait_log(r"postino/smtp\[\d+\]: [0-9A-F]+: to=<%s>, .*status=%s"
                      % (re.escape(rcpt), status), timeout=timeout)[0]


def test_dns_faults(postino_factory, sink, baddns):
    p = postino_factory(main={"dns_servers": "127.0.0.1:%d" % baddns.port})
    for dom in EXPECT:
        p.send(SENDER, "user@%s" % dom)
    wrong = []
    for dom, (status, dsn, reason, ip) in EXPECT.items():
        rcpt = "user@%s" % dom
        try:
            line = _status(p, rcpt, status)
        except TimeoutError:
            wrong.append("%s: no status=%s line; got: %s" % (
                dom, status, p.log_lines(r"to=<%s>" % re.escape(rcpt))))
            continue
        if "dsn=%s," % dsn not in line or not re.search(reason, line):
            wrong.append("%s: %s" % (dom, line))
        got = [m.ip for m in sink.to(rcpt)]
        if ip and got != [ip]:
            wrong.append("%s: delivered to %s, expected %s" % (dom, got, ip))
        if not ip and got:
            wrong.append("%s: delivered to %s" % (dom, got))
    assert not wrong, "\n".join(wrong)
    assert baddns.asked("tcp", "tc.test"), "the truncated answer was not asked again over TCP"
    bad = p.log_lines(r"panic|fatal|terminated|signal \d|exit status")
    assert not bad, "\n".join(bad)

    # The trouble ends: the deferred messages are delivered, once each.
    baddns.set("servfail.test", {"MX": [(10, "mx.tc.test")]})
    baddns.set("timeout.test", {"MX": [(10, "mx.tc.test")]})
    baddns.set("sf.mxservfail.test", {"A": ["127.0.0.3"]})
    for dom in ("servfail.test", "timeout.test", "mxservfail.test"):
        sink.wait_to("user@%s" % dom, timeout=90)
    assert len(sink.to("user@servfail.test")) == 1


def test_resolver_down_defers_then_delivers(postino_factory, sink, baddns):
    dead = h.free_port(socket.SOCK_DGRAM)        # nothing listens there
    p = postino_factory(main={"dns_servers": "127.0.0.1:%d" % dead})
    qid = p.send(SENDER, "user@tc.test")
    line = _status(p, "user@tc.test", "deferred")
    assert "dsn=4.4.3," in line, line
    assert "try again" in line, line
    p.set(dns_servers="127.0.0.1:%d" % baddns.port)
    p.cli("reload", check=True)
    sink.wait_to("user@tc.test", timeout=60)
    p.wait_removed(qid, timeout=30)
    assert len(sink.to("user@tc.test")) == 1


def test_mx_pointing_at_ourselves_bounces_5_4_6(postino_factory, sink, baddns):
    """The MX of loop.test is 127.0.0.1, where this very postino listens
    (smtp_port is its own port): 5.4.6 "mail for loop.test loops back to
    myself", as Postfix, and the DSN goes out once."""
    baddns.set("loop.test", {"MX": [(10, "mx.loop.test")]})
    baddns.set("mx.loop.test", {"A": ["127.0.0.1"]})
    p = postino_factory(main={"dns_servers": "127.0.0.1:%d" % baddns.port}, start=False)
    tfile = os.path.join(p.conf, "transport")
    with open(tfile, "w") as f:                 # DSNs to the sink, not to ourselves
        f.write("sender.test smtp:[127.0.0.5]:%d\n" % sink.port)
    p.cli("map", "build", tfile, check=True)
    p.set(smtp_port=p.port, transport_maps="hash:" + tfile)
    p.start()
    p.send(SENDER, "user@loop.test")
    line = _status(p, "user@loop.test", "bounced")
    assert "dsn=5.4.6," in line, line
    assert "mail for loop.test loops back to myself" in line, line
    h.wait_until(lambda: sink.received(lambda m: m.mail_from == "" and SENDER in m.rcpts),
                 timeout=30, what="the DSN")
