"""Which replies the delivery agent takes for success (issue 7, item 1).

A receiver that answers DATA with "250" has not received the message; one
that answers 220, 251, 334 (or 421 and then nothing) has not either. For
every client state, a reply other than the one RFC 5321 4.3.2 / RFC 3207
name as success must never give status=sent: the message stays queued
(deferred, the connection dropped and never reused), and once the receiver
is fixed it is delivered exactly once, with all of its content.

Receivers: one scripted raw server per scenario (ScriptedMX, on 127.0.1.x,
all on one port), named <scenario>.wrong.test in the test DNS. Each
connection made while the scenario is "broken" gives the scripted wrong
answer; connections made after the test fixes it get a correct ESMTP
server that records the messages it accepted (dot-unstuffed)."""
import asyncio
import os
import re
import shutil
import ssl
import subprocess

import pytest

import postino_harness as h

SENDER = "s@sender.test"

# What a broken receiver does at one point ("greet", a verb, or "DOT" for
# the end of data): ("wrong", bytes) answer and go on reading commands;
# ("silence", bytes) answer, then say nothing more; ("close", bytes) answer
# and hang up; ("data", bytes) answer, then read (and drop) message
# content; ("ok", bytes) a legitimate scripted answer (not an error).
W, SILENT, CLOSE, DATA, OK = "wrong", "silence", "close", "data", "ok"

# name -> (ip, options); options: pipelining (default True), starttls,
# broken {point: (kind, bytes)}, want (regex for the deferral reason), dsn,
# after_ok (instead of AFTER_OK).
SCENARIOS = {
    "data250": ("127.0.1.1", dict(broken={"DATA": (W, b"250 2.0.0 Ok\r\n")},
                                  want=r"said: 250 2\.0\.0 Ok \(in reply to DATA command\); "
                                       r"protocol error: expected 354")),
    "data250np": ("127.0.1.2", dict(pipelining=False, broken={"DATA": (W, b"250 2.0.0 Ok\r\n")},
                                    want=r"said: 250 2\.0\.0 Ok \(in reply to DATA command\); "
                                         r"protocol error: expected 354")),
    "data220": ("127.0.1.3", dict(broken={"DATA": (W, b"220 mx ready\r\n")},
                                  want=r"said: 220 mx ready \(in reply to DATA command\); "
                                       r"protocol error: expected 354")),
    "data251": ("127.0.1.4", dict(broken={"DATA": (W, b"251 2.1.5 Ok\r\n")},
                                  want=r"said: 251 .*DATA command\); protocol error")),
    "data334": ("127.0.1.5", dict(broken={"DATA": (W, b"334 VXNlcm5hbWU6\r\n")},
                                  want=r"said: 334 .*DATA command\); protocol error")),
    "data421silent": ("127.0.1.6", dict(
        broken={"DATA": (SILENT, b"421 4.3.2 Service shutting down\r\n")}, dsn="4.3.2",
        want=r"said: 421 4\.3\.2 Service shutting down \(in reply to DATA command\)")),
    "data421silentnp": ("127.0.1.7", dict(
        pipelining=False, broken={"DATA": (SILENT, b"421 4.3.2 Service shutting down\r\n")},
        dsn="4.3.2", want=r"said: 421 4\.3\.2 Service shutting down \(in reply to DATA")),
    "data421close": ("127.0.1.8", dict(
        broken={"DATA": (CLOSE, b"421 4.3.2 Service shutting down\r\n")}, dsn="4.3.2",
        want=r"said: 421 4\.3\.2 Service shutting down \(in reply to DATA command\)")),
    "datamixed": ("127.0.1.9", dict(
        broken={"DATA": (W, b"354-go ahead\r\n250 2.0.0 Ok\r\n")},
        want=r"reply code changed in a multi-line reply while sending DATA command")),
    "dataearly": ("127.0.1.10", dict(
        broken={"DATA": (DATA, b"354 go ahead\r\n250 2.0.0 Ok: queued early\r\n")},
        want=r"protocol error: host \S+ sent an unexpected reply while sending message body|"
             r"before our end of DATA command was sent")),
    "dot354": ("127.0.1.11", dict(broken={"DOT": (W, b"354 more please\r\n")},
                                  want=r"said: 354 more please \(in reply to end of DATA "
                                       r"command\); protocol error: expected 250")),
    "dot220": ("127.0.1.12", dict(broken={"DOT": (W, b"220 hello\r\n")},
                                  want=r"end of DATA command\); protocol error: expected 250")),
    "dot334": ("127.0.1.13", dict(pipelining=False, broken={"DOT": (W, b"334 \r\n")},
                                  want=r"end of DATA command\); protocol error: expected 250")),
    "mail354": ("127.0.1.14", dict(broken={"MAIL": (W, b"354 go ahead\r\n")},
                                   want=r"said: 354 go ahead \(in reply to MAIL FROM command\); "
                                        r"protocol error: expected 250")),
    "mail354np": ("127.0.1.15", dict(pipelining=False, broken={"MAIL": (W, b"354 go ahead\r\n")},
                                     want=r"MAIL FROM command\); protocol error: expected 250")),
    "mail220": ("127.0.1.16", dict(broken={"MAIL": (W, b"220 2.0.0 hi\r\n")},
                                   want=r"MAIL FROM command\); protocol error: expected 250")),
    "rcpt354": ("127.0.1.17", dict(broken={"RCPT": (W, b"354 go ahead\r\n")},
                                   want=r"said: 354 go ahead \(in reply to RCPT TO command\); "
                                        r"protocol error: expected 250 or 251")),
    "rcpt354np": ("127.0.1.18", dict(pipelining=False, broken={"RCPT": (W, b"354 go ahead\r\n")},
                                     want=r"RCPT TO command\); protocol error: expected 250 or 251")),
    "rcpt421silent": ("127.0.1.19", dict(
        broken={"RCPT": (SILENT, b"421 4.3.2 Too busy\r\n")}, dsn="4.3.2",
        want=r"said: 421 4\.3\.2 Too busy \(in reply to RCPT TO command\)")),
    "greet250": ("127.0.1.20", dict(broken={"greet": (W, b"250 mx ready\r\n")},
                                    want=r"said: 250 mx ready \(in reply to CONNECT command\); "
                                         r"protocol error: expected 220")),
    "greetextra": ("127.0.1.21", dict(
        broken={"greet": (W, b"220 mx ready\r\n250 2.0.0 Ok\r\n")},
        # (should the two lines arrive in two reads, the shifted replies
        # still end in a protocol error, at DATA)
        want=r"said: 250 2\.0\.0 Ok \(before our EHLO command was sent\); protocol error|"
             r"\(in reply to DATA command\); protocol error: expected 354",
        after_ok={"EHLO", "MAIL", "RCPT", "DATA", "QUIT"})),
    "ehlo220": ("127.0.1.22", dict(broken={"EHLO": (W, b"220 mx ready\r\n")},
                                   want=r"said: 220 mx ready \(in reply to EHLO command\); "
                                        r"protocol error: expected 250")),
    "helo220": ("127.0.1.23", dict(broken={"EHLO": (OK, b"502 5.5.2 no EHLO here\r\n"),
                                           "HELO": (W, b"220 mx\r\n")},
                                   want=r"\(in reply to HELO command\); protocol error: expected 250")),
    "starttls250": ("127.0.1.24", dict(starttls=True, broken={"STARTTLS": (W, b"250 2.0.0 Ok\r\n")},
                                       want=r"said: 250 2\.0\.0 Ok \(in reply to STARTTLS "
                                            r"command\); protocol error: expected 220")),
}
# Verbs a client may still send on a connection after the wrong answer at
# each point: the rest of its pipelined group, QUIT. Anything else means it
# went on using the connection (or sent content nobody asked for).
AFTER_OK = {"greet": {"QUIT", "EHLO"}, "EHLO": {"QUIT"}, "HELO": {"QUIT"},
            "STARTTLS": {"QUIT"}, "MAIL": {"RCPT", "DATA", "QUIT"},
            "RCPT": {"RCPT", "DATA", "QUIT"}, "DATA": {"QUIT"}, "DOT": {"QUIT"},
            "RSET": {"QUIT"}}
# The recovering scenarios of test_recovers_without_the_fix.
EXTRA = {
    "rset220": ("127.0.1.40", dict(broken={"RSET": (W, b"220 2.0.0 Ok\r\n")})),
    "starttlsmay": ("127.0.1.41", dict(starttls=True,
                                       broken={"STARTTLS": (W, b"250 2.0.0 Ok\r\n")})),
}
ALL = dict(SCENARIOS, **EXTRA)

pytestmark = pytest.mark.dns([("a", "%s.wrong.test" % n, ip) for n, (ip, _) in ALL.items()])


class ScriptedMX(h.AsyncServers):
    """One ESMTP receiver per scenario; wrong at the scripted point while
    the scenario is not in `fixed`."""

    def __init__(self, port, scenarios, tls_ctx):
        super().__init__(port, scenarios)
        self.tls_ctx = tls_ctx
        self.fixed = set()
        self.conns = {}      # name -> [{"wrong": point or None, "after": [verbs]}]
        self.messages = {}   # name -> [(rcpts, content)] answered with 250

    async def session(self, name, opts, reader, writer):
        broken = {} if name in self.fixed else opts.get("broken", {})
        conn = {"wrong": None, "after": []}
        self.conns.setdefault(name, []).append(conn)
        try:
            await self._converse(name, opts, broken, conn, reader, writer)
        except (OSError, asyncio.TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _act(self, broken, point, conn, reader, writer):
        """The scripted answer at point. Returns "end" (session over),
        "data" (read content next), or "" (go on)."""
        kind, out = broken[point]
        if kind != OK:
            conn["wrong"] = point
        writer.write(out)
        await writer.drain()
        if kind == CLOSE:
            return "end"
        if kind == SILENT:
            while True:  # say nothing; note what the client still sends
                line = await asyncio.wait_for(reader.readline(), 120)
                if not line:
                    return "end"
                conn["after"].append(_verb(line))
        return "data" if kind == DATA else ""

    async def _converse(self, name, opts, broken, conn, reader, writer):
        tls, rcpts = False, []
        if "greet" in broken:
            if await self._act(broken, "greet", conn, reader, writer) == "end":
                return
        else:
            writer.write(b"220 %s.wrong.test ESMTP\r\n" % name.encode())
        while True:
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 120)
            if not line:
                return
            verb = _verb(line)
            if conn["wrong"]:
                conn["after"].append(verb)
            if verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            if verb in broken:
                act = await self._act(broken, verb, conn, reader, writer)
                if act == "end":
                    return
                if act == "data" and await _content(reader) is None:
                    return
                continue
            if verb == "EHLO":
                writer.write(b"250-%s.wrong.test\r\n" % name.encode() +
                             (b"250-PIPELINING\r\n" if opts.get("pipelining", True) else b"") +
                             (b"250-STARTTLS\r\n" if opts.get("starttls") and not tls else b"") +
                             b"250 8BITMIME\r\n")
            elif verb == "STARTTLS":
                writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                await writer.drain()
                await writer.start_tls(self.tls_ctx)
                tls = True
            elif verb == "MAIL":
                rcpts = []
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                rcpts.append(line.decode(errors="replace").split("<", 1)[1].split(">", 1)[0])
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                content = await _content(reader)
                if content is None:
                    return
                if "DOT" in broken:
                    if await self._act(broken, "DOT", conn, reader, writer) == "end":
                        return
                    continue
                if conn["wrong"] is None:
                    self.messages.setdefault(name, []).append((list(rcpts), content))
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            else:
                writer.write(b"250 2.0.0 Ok\r\n")


def _verb(line):
    return line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode(errors="replace")


async def _content(reader):
    """DATA content up to the CRLF.CRLF line, unstuffed; None at EOF."""
    out = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 120)
        if not line:
            return None
        if line == b".\r\n":
            return b"".join(out)
        out.append(line[1:] if line.startswith(b".") else line)


@pytest.fixture(scope="module")
def tls_ctx():
    d = h.make_tmpdir("postino-wrong-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
                    "-out", "c.pem", "-days", "2", "-subj", "/CN=mx.wrong.test"], cwd=d, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
    yield ctx
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mx(tls_ctx):
    port = h.free_port_all([ip for ip, _ in ALL.values()])
    srv = ScriptedMX(port, ALL, tls_ctx).start()
    yield srv
    srv.stop()


def _postino(postino_factory, port, tls_policy=None):
    main = {"smtp_port": str(port), "smtp_connection_cache_time_limit": "10s"}
    # Short enough that the unfixed code's waits end within the test.
    for t in ("smtp_helo_timeout", "smtp_mail_timeout", "smtp_rcpt_timeout",
              "smtp_data_init_timeout", "smtp_data_done_timeout", "smtp_rset_timeout",
              "smtp_starttls_timeout"):
        main[t] = "15s"
    p = postino_factory(main=main, start=False)
    if tls_policy:
        pfile = os.path.join(p.conf, "tls_policy")
        with open(pfile, "w") as f:
            f.write(tls_policy)
        p.cli("map", "build", pfile, check=True)
        p.set(smtp_tls_policy_maps="hash:" + pfile)
    p.start()
    return p


def _body(tag):
    """~300 KB (more than the client buffers at once), lines that start
    with dots, a line that is a lone dot."""
    lines = [("." if i % 3 == 0 else "") + "%s line %05d of the reply-code test" % (tag, i)
             for i in range(7000)]
    return "\r\n".join(lines + [".", "..", "end"]) + "\r\n"


def _send(p, name):
    rcpts = ["a@%s.wrong.test" % name, "b@%s.wrong.test" % name]
    text, msgid = p.make_message(SENDER, rcpts, body=_body(name), subject=name)
    return p.send(SENDER, rcpts, raw=text), rcpts, text


def _to_lines(p, rcpt):
    return p.log_lines(r"postino/smtp\[\d+\]: [0-9A-F]+: to=<%s>," % re.escape(rcpt))


def _check_delivered_once(srv, name, rcpts, text):
    msgs = srv.messages.get(name, [])
    assert len(msgs) == 1, "%s: %d messages at the receiver" % (name, len(msgs))
    got_rcpts, content = msgs[0]
    assert sorted(got_rcpts) == sorted(rcpts), (name, got_rcpts)
    assert content.endswith(text.encode()), "%s: content differs" % name


def test_wrong_success_replies_never_count(postino_factory, mx):
    p = _postino(postino_factory, mx.port, tls_policy="starttls250.wrong.test encrypt\n")
    sent = {name: _send(p, name) for name in SCENARIOS}
    failures = []
    # Broken: each recipient is deferred with a reason that says what the
    # server did; nothing is ever "sent"; the message stays in the queue.
    for name, (qid, rcpts, _) in sent.items():
        opts = SCENARIOS[name][1]
        for r in rcpts:
            try:
                line = p.wait_log(r"to=<%s>, .*status=" % re.escape(r), timeout=60)[0]
            except TimeoutError:
                failures.append("%s: %s: no outcome logged" % (name, r))
                continue
            if "status=deferred" not in line or "dsn=%s," % opts.get("dsn", "4.5.0") not in line \
                    or not re.search(opts["want"], line):
                failures.append("%s: not the expected deferral: %s" % (name, line))
    ids, listing = p.queue_list()
    for name, (qid, rcpts, _) in sent.items():
        opts = SCENARIOS[name][1]
        if qid not in ids:
            failures.append("%s: %s is not in the queue any more" % (name, qid))
        for r in rcpts:
            bad = [ln for ln in _to_lines(p, r) if "status=deferred" not in ln]
            if bad:
                failures.append("%s: %s" % (name, bad[0]))
        conns = mx.conns.get(name, [])
        if not any(c["wrong"] for c in conns):
            failures.append("%s: the receiver never gave its wrong answer" % name)
        for c in conns:
            if c["wrong"] and not set(c["after"]) <= opts.get("after_ok", AFTER_OK[c["wrong"]]):
                failures.append("%s: connection used after the wrong answer at %s: %s"
                                % (name, c["wrong"], c["after"]))
    assert not failures, "\n".join(failures)
    # Fixed: every message arrives exactly once, whole, and leaves the queue.
    mx.fixed.update(SCENARIOS)
    for name, (qid, rcpts, text) in sent.items():
        for r in rcpts:
            p.wait_log(r"to=<%s>, .*status=sent" % re.escape(r), timeout=60)
        p.wait_removed(qid, timeout=30)
    for name, (qid, rcpts, text) in sent.items():
        try:
            _check_delivered_once(mx, name, rcpts, text)
        except AssertionError as e:
            failures.append(str(e))
        for r in rcpts:
            n = len([ln for ln in _to_lines(p, r) if "status=sent" in ln])
            if n != 1:
                failures.append("%s: %d status=sent lines for %s" % (name, n, r))
    assert not failures, "\n".join(failures)
    # Each protocol error is logged as such, naming the server's reply.
    assert p.log_lines(r"warning: [0-9A-F]+: protocol error: host data250\.wrong\.test\[127\.0\.1\.1\]"
                       r":\d+ replied 250 to DATA \(expected 354\); connection dropped")


def test_recovers_without_the_fix(postino_factory, mx):
    """A wrong answer to RSET on a cached connection: that connection is
    dropped, the message goes over a new one. A 250 to STARTTLS at the may
    level: the same host again without STARTTLS (as for a failed
    handshake). Both deliver although the receiver stays broken."""
    p = _postino(postino_factory, mx.port)
    q1, r1, t1 = _send(p, "rset220")
    for r in r1:
        p.wait_log(r"to=<%s>, .*status=sent" % re.escape(r), timeout=30)
    # The connection is now cached (10 s); the next message reuses it.
    rcpts = ["c@rset220.wrong.test"]
    text, _ = p.make_message(SENDER, rcpts, body=_body("second"))
    q2 = p.send(SENDER, rcpts, raw=text)
    p.wait_log(r"to=<c@rset220\.wrong\.test>, .*status=sent", timeout=30)
    assert p.log_lines(r"protocol error: host rset220\.wrong\.test\[127\.0\.1\.40\]:\d+ "
                       r"replied 220 to RSET \(expected 250\); connection dropped")
    msgs = mx.messages.get("rset220", [])
    assert len(msgs) == 2, msgs and [m[0] for m in msgs]
    assert msgs[1][1].endswith(text.encode())
    conns = mx.conns["rset220"]
    assert [c["wrong"] for c in conns] == ["RSET", None], conns
    # The RSET went in one pipelined flight with MAIL, RCPT and DATA (a
    # reused connection costs no round trip); after the wrong answer the
    # client sent nothing more (no content: the message arrived once, over
    # the second connection).
    assert set(conns[0]["after"]) <= {"MAIL", "RCPT", "DATA", "QUIT"}, conns[0]["after"]
    p.wait_removed(q2)

    q3, r3, t3 = _send(p, "starttlsmay")
    for r in r3:
        line = p.wait_log(r"to=<%s>, .*status=sent" % re.escape(r), timeout=60)[0]
        assert ", tls=" not in line, line
    p.wait_log(r"protocol error: host starttlsmay\.wrong\.test\[127\.0\.1\.41\]:\d+ replied 250 "
               r"to STARTTLS \(expected 220\)")
    p.wait_log(r"STARTTLS with starttlsmay\.wrong\.test\[127\.0\.1\.41\]:\d+ failed; "
               r"retrying without TLS")
    _check_delivered_once(mx, "starttlsmay", r3, t3)
    p.wait_removed(q3)
