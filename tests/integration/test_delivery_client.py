"""The SMTP client's routing and timing: RFC 7505 null MX, equal MX
preferences shared at random, the next MX after a 421 greeting, DSN
parameters passed on only to servers that offer DSN, and one timeout per
SMTP phase (plus the TCP connect timeout).

Where aiosmtpd cannot misbehave on purpose (stall after a given command,
421 at the greeting, record the raw MAIL/RCPT lines) a small asyncio SMTP
server in this file does it, on its own loopback addresses."""
import asyncio
import os
import re
import socket
import time

import pytest

import postino_harness as h

SENDER = "s@sender.test"


# ---------------------------------------------------------------- raw server

class RawSmtp(h.AsyncServers):
    """Scripted SMTP servers: ip -> script dict with
      greet      bytes sent on connect (default "220 raw.test ESMTP")
      ehlo       EHLO keywords after the first line (list of str)
      stall      verb after which nothing is answered: "MAIL", "RCPT",
                 "DATA" (354 never comes) or "DOT" (after the final dot)
    Every command line is recorded in self.lines[ip]."""

    def __init__(self, port, scripts):
        # keyed by address: each script listens on its own 127.0.0.x
        super().__init__(port, {ip: (ip, sc) for ip, sc in scripts.items()})
        self.lines = {ip: [] for ip in self.scripts}
        self.conns = {ip: 0 for ip in self.scripts}
        self.messages = {ip: 0 for ip in self.scripts}

    async def _stall(self, reader):
        # Answer nothing; wait for the client to give up (EOF) or 60 s.
        try:
            await asyncio.wait_for(reader.read(), 60)
        except asyncio.TimeoutError:
            pass

    async def session(self, ip, script, reader, writer):
        self.conns[ip] += 1
        stall = script.get("stall")
        try:
            writer.write(script.get("greet", b"220 raw.test ESMTP\r\n"))
            await writer.drain()
            if script.get("greet", b"220")[:1] != b"2":
                await self._stall(reader)
                return
            while True:
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    return
                text = line.decode(errors="replace").rstrip("\r\n")
                self.lines[ip].append(text)
                verb = text.split(" ")[0].split(":")[0].upper()
                if verb == stall:
                    await self._stall(reader)
                    return
                if verb in ("EHLO", "HELO"):
                    kw = script.get("ehlo", [])
                    out = ["250-raw.test" if kw else "250 raw.test"]
                    out += ["250-%s" % k for k in kw[:-1]] + (["250 %s" % kw[-1]] if kw else [])
                    writer.write(("\r\n".join(out) + "\r\n").encode())
                elif verb == "DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    while True:
                        body = await asyncio.wait_for(reader.readline(), 60)
                        if not body or body in (b".\r\n", b".\n"):
                            break
                    if not body:
                        return
                    if stall == "DOT":
                        await self._stall(reader)
                        return
                    self.messages[ip] += 1
                    writer.write(b"250 2.0.0 ok queued\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            return
        finally:
            writer.close()


def _line(p, rcpt, status, timeout=30):
    return p.wait_log(r"postino/smtp\[\d+\]: [0-9A-F]+: to=<%s>, .*status=%s"
                      % (re.escape(rcpt), status), timeout=timeout)[0]


def _pid(line):
    return int(re.search(r"postino/smtp\[(\d+)\]", line).group(1))


def _dsn_for(sink, rcpt, timeout=30):
    """The first DSN to SENDER that reports on rcpt."""
    def find():
        for m in sink.received(lambda m: m.mail_from == "" and SENDER in m.rcpts):
            if rcpt.lower() in m.content.decode(errors="replace").lower():
                return m
        return None
    return h.wait_until(find, timeout=timeout, what="a DSN about %s" % rcpt)


# ---------------------------------------------------------------- 2a. null MX

def test_null_mx_bounces_5_1_10(postino, sink):
    rcpt = "user@nomail.test"
    qid = postino.send(SENDER, rcpt, subject="nullmx")
    line = _line(postino, rcpt, "bounced")
    assert "dsn=5.1.10," in line, line
    assert "relay=none" in line, line
    dsn = _dsn_for(sink, rcpt)
    _, blocks = h.dsn_parts(dsn.msg)
    assert blocks[0]["status"].strip() == "5.1.10", blocks[0]
    postino.wait_removed(qid)
    assert not sink.to(rcpt)


# ---------------------------------------------------------------- 2b. equal MX

@pytest.mark.dns([("mx", "equal.test", "mxa.equal.test", 10),
                  ("mx", "equal.test", "mxb.equal.test", 10),
                  ("a", "mxa.equal.test", "127.0.0.2"),
                  ("a", "mxb.equal.test", "127.0.0.3")])
def test_equal_preference_mx_share(postino_factory, sink):
    # No connection reuse: each message picks its host afresh.
    p = postino_factory(main={"smtp_connection_cache_on_demand": "no"})
    n = 40
    conn = p.smtp()
    try:
        for i in range(n):
            p.send(SENDER, "u%d@equal.test" % i, conn=conn)
    finally:
        conn.quit()
    got = sink.wait_for(lambda m: m.rcpts[0].endswith("@equal.test"), count=n, timeout=60)
    by_ip = {}
    for m in got:
        by_ip[m.ip] = by_ip.get(m.ip, 0) + 1
    assert set(by_ip) <= {"127.0.0.2", "127.0.0.3"}, by_ip
    assert by_ip.get("127.0.0.2", 0) >= 3 and by_ip.get("127.0.0.3", 0) >= 3, by_ip


# ---------------------------------------------------------------- 2c. 421 greeting

def test_next_mx_after_421_greeting(postino, sink):
    sink.stop(["127.0.0.2"])
    srv = RawSmtp(sink.port, {"127.0.0.2": {"greet": b"421 4.3.2 try later\r\n"}}).start()
    try:
        rcpt = "user@example.test"
        qid = postino.send(SENDER, rcpt, subject="421")
        m = sink.wait_to(rcpt)[0]
        assert m.ip == "127.0.0.3"
        line = _line(postino, rcpt, "sent")
        assert "relay=mx2.example.test[127.0.0.3]:%d" % sink.port in line, line
        assert srv.conns["127.0.0.2"] >= 1, "mx1 was never tried"
        postino.wait_removed(qid)
    finally:
        srv.stop()


# ---------------------------------------------------------------- 2d. DSN parameters

DSN_IP, NODSN_IP = "127.0.0.20", "127.0.0.21"


@pytest.mark.dns([("a", "dsn.test", DSN_IP), ("a", "nodsn.test", NODSN_IP)])
def test_dsn_parameters_passed_on(postino_factory):
    port = h.free_port_all([DSN_IP, NODSN_IP])
    srv = RawSmtp(port, {
        DSN_IP: {"ehlo": ["PIPELINING", "SIZE 10240000", "8BITMIME", "DSN"]},
        NODSN_IP: {"ehlo": ["PIPELINING", "SIZE 10240000", "8BITMIME"]},
    }).start()
    try:
        p = postino_factory(main={"smtp_port": str(port), "smtp_tls_security_level": "none"})
        for ip, dom in ((DSN_IP, "dsn.test"), (NODSN_IP, "nodsn.test")):
            rcpt = "u@%s" % dom
            p.send(SENDER, rcpt, mail_options=["RET=HDRS", "ENVID=abc+2Bdef"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@y"])
            _line(p, rcpt, "sent")
        def cmd(ip, verb):
            return [ln for ln in srv.lines[ip] if ln.upper().startswith(verb)]
        mail = cmd(DSN_IP, "MAIL FROM:")
        rcpt = cmd(DSN_IP, "RCPT TO:")
        assert len(mail) == 1 and len(rcpt) == 1, srv.lines[DSN_IP]
        mp = mail[0].split()[2:]
        assert re.fullmatch(r"MAIL FROM:<s@sender\.test>", mail[0].split()[0] + " " +
                            mail[0].split()[1]), mail[0]
        assert "RET=HDRS" in mp and "ENVID=abc+2Bdef" in mp, mail[0]
        assert any(re.fullmatch(r"SIZE=\d+", x) for x in mp), mail[0]
        assert rcpt[0] == "RCPT TO:<u@dsn.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y", rcpt[0]
        # Without DSN in EHLO: SIZE only, no DSN parameter at all.
        mail = cmd(NODSN_IP, "MAIL FROM:")
        rcpt = cmd(NODSN_IP, "RCPT TO:")
        assert len(mail) == 1 and len(rcpt) == 1, srv.lines[NODSN_IP]
        assert re.fullmatch(r"MAIL FROM:<s@sender\.test> SIZE=\d+", mail[0]), mail[0]
        assert rcpt[0] == "RCPT TO:<u@nodsn.test>", rcpt[0]
    finally:
        srv.stop()


# ---------------------------------------------------------------- 2e. timeouts

STALLS = {  # name -> (ip, stalled verb, Postfix-like phase text)
    "mail": ("127.0.0.30", "MAIL", "while sending MAIL FROM"),
    "rcpt": ("127.0.0.31", "RCPT", "while sending RCPT TO"),
    "data": ("127.0.0.32", "DATA", "while sending DATA command"),
    "dot": ("127.0.0.33", "DOT",
            "while sending end of data -- message may be sent more than once"),
}
CONNECT_IP = "127.0.0.34"


@pytest.mark.dns([("a", "stall-%s.test" % n, ip) for n, (ip, _, _) in STALLS.items()] +
                 [("a", "noaccept.test", CONNECT_IP)])
def test_phase_timeouts(postino_factory):
    ips = [ip for ip, _, _ in STALLS.values()]
    port = h.free_port_all(ips + [CONNECT_IP])
    # No PIPELINING: each command waits for its own reply, so the stall
    # hits exactly the phase named.
    srv = RawSmtp(port, {ip: {"ehlo": ["SIZE 10240000", "8BITMIME"], "stall": verb}
                         for ip, verb, _ in STALLS.values()}).start()
    try:
        p = postino_factory(main={"smtp_port": str(port), "smtp_tls_security_level": "none",
                                  "smtp_mail_timeout": "2s", "smtp_rcpt_timeout": "2s",
                                  "smtp_data_init_timeout": "2s",
                                  "smtp_data_done_timeout": "2s"})
        for name in STALLS:
            p.send(SENDER, "u@stall-%s.test" % name, subject="stall " + name)
        for name, (ip, _, phase) in STALLS.items():
            rcpt = "u@stall-%s.test" % name
            line = _line(p, rcpt, "deferred")
            assert "dsn=4.4.2," in line, line
            assert "relay=stall-%s.test[%s]:%d" % (name, ip, port) in line, line
            assert "conversation with stall-%s.test[%s] timed out %s" % (name, ip, phase) \
                in line, line
            assert os.path.exists("/proc/%d" % _pid(line)), "delivery died: " + line
        bad = p.log_lines(r"panic|fatal|terminated|signal \d|exit status")
        assert not bad, "\n".join(bad)
    finally:
        srv.stop()


def _full_backlog_listener(ip, port):
    """A listening socket that never accepts, with its accept queue full:
    further SYNs are dropped, so a connect() hangs (hermetic, loopback).
    Returns (listener, fillers) or None when the kernel still answers."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((ip, port))
    lst.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex((ip, port))
        fillers.append(c)
    time.sleep(0.3)
    probe = socket.socket()
    probe.settimeout(0.7)
    try:
        probe.connect((ip, port))
        hangs = False
    except socket.timeout:
        hangs = True
    except OSError:
        hangs = False
    probe.close()
    if not hangs:
        for c in fillers:
            c.close()
        lst.close()
        return None
    return lst, fillers


@pytest.mark.dns([("a", "noaccept.test", CONNECT_IP)])
def test_connect_timeout(postino_factory):
    port = h.free_port_all([CONNECT_IP])
    got = _full_backlog_listener(CONNECT_IP, port)
    if got is None:
        pytest.skip("the kernel completes connections beyond a full backlog here")
    lst, fillers = got
    try:
        p = postino_factory(main={"smtp_port": str(port), "smtp_connect_timeout": "1s",
                                  "smtp_tls_security_level": "none"})
        t0 = time.time()
        rcpt = "u@noaccept.test"
        p.send(SENDER, rcpt)
        line = _line(p, rcpt, "deferred")
        assert time.time() - t0 < 15
        assert "dsn=4.4.1," in line, line
        assert "connect to noaccept.test[%s]:%d: Connection timed out" % (CONNECT_IP, port) \
            in line, line
        assert os.path.exists("/proc/%d" % _pid(line))
    finally:
        for c in fillers:
            c.close()
        lst.close()


# ------------------------------------------------- qmgr's malformed requests

def _agent_dropped(p, record, why):
    """The agent answers record with status=fail naming why and hangs up,
    and logs the one line for a malformed record (common/util/conn)."""
    h.record_dropped(os.path.join(p.spool, "private", "smtp"), record, why)
    return p.wait_log(r"postino/smtp\[\d+\]: error: malformed record from qmgr: .*%s.*; "
                      r"dropping the connection" % re.escape(why))[-1]


def test_malformed_request_drops_qmgr_not_the_agent(postino_factory, sink):
    """A request qmgr could not have meant is a peer's fault, not a broken
    invariant of the agent: that connection is dropped, nothing of the
    request is run or recorded, and the agent goes on serving."""
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
    rcpt = "later@example.test"
    sink.on_rcpt(rcpt, forever="451 4.3.0 not yet, try later")
    qid = p.send(SENDER, rcpt, subject="kept deferred")
    first = _line(p, rcpt, "deferred")
    q = qid.encode()
    lines = [
        _agent_dropped(p, b"request=deliver\nqueue_id=%s\nnexthop=x\nrcpt=0\n\n" % q, "proto"),
        _agent_dropped(p, b"proto=1\nrequest=deliver\nnexthop=x\nrcpt=0\n\n", "queue_id"),
        _agent_dropped(p, b"proto=1\nrequest=deliver\nqueue_id=%s\nrcpt=0\n\n" % q, "nexthop"),
        _agent_dropped(p, b"proto=1\nrequest=deliver\nqueue_id=%s\nnexthop=x\n\n" % q,
                       "no recipients"),
        _agent_dropped(p, b"proto=1\nrequest=deliver\nqueue_id=%s\nnexthop=x\nrcpt=-1\n\n" % q,
                       "recipient index"),
        _agent_dropped(p, b"proto=1\nrequest=deliver\nqueue_id=%s\nnexthop=[127.0.0.1]:%d\n"
                       b"rcpt=0\nrcpt=7\n\n" % (q, sink.port), "recipient index out of range"),
    ]
    # A request the agent declines is no malformed one: answered, then closed.
    a = h.RecordPeer(os.path.join(p.spool, "private", "smtp"))
    try:
        r = a.ask(b"proto=1\nrequest=nonsense\n\n")
        assert r is not None and r["status"] == "fail" and "unknown request" in r["reason"], r
        assert a.at_eof()
    finally:
        a.close()
    # Nothing was run: no second attempt, no result appended.
    assert len(p.log_lines(r"%s: to=<%s>" % (qid, re.escape(rcpt)))) == 1
    assert not p.log_lines(r"postino/smtp\[\d+\]: (panic|fatal)")
    # The agents are still the ones that logged it, and deliver.
    assert all(os.path.exists("/proc/%d" % _pid(ln)) for ln in lines + [first]), lines
    assert not p.log_lines(r"master\[\d+\]: warning: process \S+ pid \d+ (exit|killed)")
    p.send(SENDER, "alive@example.test")
    sink.wait_to("alive@example.test")
    _line(p, "alive@example.test", "sent")
