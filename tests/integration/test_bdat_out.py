"""BDAT on the way out (RFC 3030 CHUNKING; issue 7, item 6).

The receivers are raw asyncio servers (ChunkMX, one per scenario on
127.0.3.x, all on one port, <name>.bdat.test in the test DNS) that speak
DATA and, when they offer CHUNKING, BDAT: they record every chunk (size,
LAST, whether more bytes were already waiting - pipelining) and every
message accepted, and can be scripted to answer a given chunk with any
reply. aiosmtpd has no BDAT, hence the own server.

What is checked: the next hop gets the same bytes over BDAT as over DATA
(DATA-only receivers get the same message; content with bare CR/LF is
normalised alike; 7-bit conversion alike); messages over
64 KB go in several chunks, the first in the same flight as MAIL/RCPT
when PIPELINING is offered, one at a time otherwise; a 4xx/5xx to a chunk
defers/bounces the accepted recipients and stops the content; any other
reply to a chunk is a protocol error (never status=sent); no content goes
when no recipient was accepted (beyond the first pipelined chunk); a
receiver without CHUNKING, or smtp_chunking_enable = no, gets DATA; and a
second postino takes BDAT from the first."""
import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess

import pytest

import postino_harness as h

SENDER = "s@sender.test"

# name -> (ip, options). Options: chunking (True), pipelining (True),
# eightbit (True: offer 8BITMIME), starttls (offer it), withhold (send no reply before the first
# chunk or DATA has been read: only a client that puts the chunk in the
# same flight as MAIL and RCPT gets an answer), rcpt (reply to every RCPT),
# chunk {n or "LAST": reply} (scripted while the scenario is broken: n is
# the chunk's number from 1), want (regex for the outcome's reason), dsn,
# status (deferred or bounced).
NEED_250 = r"protocol error: expected 250"
SCENARIOS = {
    # same bytes as DATA
    "pipe": ("127.0.3.1", dict(withhold=True)),
    "lock": ("127.0.3.2", dict(pipelining=False)),
    "data": ("127.0.3.3", dict(chunking=False)),
    "pipe7": ("127.0.3.4", dict(eightbit=False)),
    "data7": ("127.0.3.5", dict(chunking=False, eightbit=False)),
    "pipetls": ("127.0.3.6", dict(starttls=True)),
    # refused chunks
    "mid452": ("127.0.3.10", dict(chunk={2: b"452 4.3.1 Insufficient system storage\r\n"},
                                  status="deferred", dsn="4.3.1",
                                  want=r"said: 452 4\.3\.1 Insufficient system storage "
                                       r"\(in reply to BDAT command\)")),
    "mid552lock": ("127.0.3.11", dict(pipelining=False,
                                      chunk={2: b"552 5.3.4 Message too big\r\n"},
                                      status="bounced", dsn="5.3.4",
                                      want=r"said: 552 5\.3\.4 Message too big \(in reply to "
                                           r"BDAT command\)")),
    "last451": ("127.0.3.12", dict(chunk={"LAST": b"451 4.3.0 Try later\r\n"},
                                   status="deferred", dsn="4.3.0",
                                   want=r"said: 451 4\.3\.0 Try later \(in reply to BDAT LAST "
                                        r"command\)")),
    "last554lock": ("127.0.3.13", dict(pipelining=False,
                                       chunk={"LAST": b"554 5.7.1 Spam\r\n"}, status="bounced",
                                       dsn="5.7.1", want=r"said: 554 5\.7\.1 Spam \(in reply to "
                                                         r"BDAT LAST command\)")),
    # wrong replies: protocol errors
    "mid354": ("127.0.3.20", dict(chunk={2: b"354 go ahead\r\n"}, status="deferred", dsn="4.5.0",
                                  want=r"said: 354 go ahead \(in reply to BDAT command\); "
                                       + NEED_250)),
    "mid251lock": ("127.0.3.21", dict(pipelining=False, chunk={1: b"251 2.1.5 Ok\r\n"},
                                      status="deferred", dsn="4.5.0",
                                      want=r"\(in reply to BDAT command\); " + NEED_250)),
    "last220": ("127.0.3.22", dict(chunk={"LAST": b"220 hello\r\n"}, status="deferred",
                                   dsn="4.5.0",
                                   want=r"said: 220 hello \(in reply to BDAT LAST command\); "
                                        + NEED_250)),
    "last354lock": ("127.0.3.23", dict(pipelining=False, chunk={"LAST": b"354 more\r\n"},
                                       status="deferred", dsn="4.5.0",
                                       want=r"\(in reply to BDAT LAST command\); " + NEED_250)),
    # a second 250 to one chunk: the reply to the next one before it was sent
    "double250lock": ("127.0.3.24", dict(pipelining=False,
                                         chunk={2: b"250 2.0.0 Ok\r\n250 2.0.0 Ok again\r\n"},
                                         status="deferred", dsn="4.5.0",
                                         want=r"said: 250 2\.0\.0 Ok again \(before our BDAT "
                                              r"command was sent\); protocol error")),
    "mid421": ("127.0.3.25", dict(chunk={2: b"421 4.3.2 Shutting down\r\n"}, status="deferred",
                                  dsn="4.3.2",
                                  want=r"said: 421 4\.3\.2 Shutting down \(in reply to BDAT "
                                       r"command\)")),
    # nobody accepted
    "norcpt": ("127.0.3.30", dict(rcpt=b"550 5.1.1 No such user\r\n")),
    "norcptlock": ("127.0.3.31", dict(pipelining=False, rcpt=b"550 5.1.1 No such user\r\n")),
}
BROKEN = [n for n, (_, o) in SCENARIOS.items() if "chunk" in o]

pytestmark = pytest.mark.dns([("a", "%s.bdat.test" % n, ip) for n, (ip, _) in SCENARIOS.items()])


class ChunkMX(h.AsyncServers):
    """DATA and BDAT receiver; scripted chunk replies while not `fixed`."""

    def __init__(self, port, scenarios, tls_ctx):
        super().__init__(port, scenarios)
        self.tls_ctx = tls_ctx
        self.fixed = set()
        self.conns = {}     # name -> [conn dict]
        self.messages = {}  # name -> [(via, rcpts, content)] answered 250

    async def session(self, name, opts, reader, writer):
        conn = {"chunks": [], "data": 0, "unasked": [], "wrong": False, "after_fail": [],
                "tls": False}
        self.conns.setdefault(name, []).append(conn)
        try:
            await self._converse(name, opts, conn, reader, writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _converse(self, name, opts, conn, reader, writer):
        script = {}
        pipelining = opts.get("pipelining", True)
        held = None  # replies kept back (withhold) until a chunk or DATA
        tx = None

        def reply(data):
            if held is not None:
                held.append(data)
            else:
                writer.write(data)

        writer.write(b"220 %s.bdat.test ESMTP\r\n" % name.encode())
        while True:
            if held is None:
                await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 120)
            if not line:
                return
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb == b"BDAT":
                size, last = _bdat_args(line)
                data = await asyncio.wait_for(reader.readexactly(size), 120)
            if not pipelining and len(reader._buffer) > 0:  # noqa: SLF001
                conn["unasked"].append(verb.decode(errors="replace"))
            if verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            if verb == b"EHLO":
                reply(b"250-%s.bdat.test\r\n" % name.encode() +
                      (b"250-PIPELINING\r\n" if pipelining else b"") +
                      (b"250-CHUNKING\r\n" if opts.get("chunking", True) else b"") +
                      (b"250-STARTTLS\r\n" if opts.get("starttls") and not conn["tls"]
                       else b"") +
                      (b"250-8BITMIME\r\n" if opts.get("eightbit", True) else b"") +
                      b"250 SIZE 100000000\r\n")
            elif verb == b"STARTTLS":
                writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                await writer.drain()
                await writer.start_tls(self.tls_ctx)
                conn["tls"] = True
            elif verb == b"MAIL":
                tx = {"rcpts": [], "content": b"", "failed": None}
                # (per transaction: a cached connection sees the fix too)
                script = {} if name in self.fixed else opts.get("chunk", {})
                if opts.get("withhold"):
                    held = []
                reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                if opts.get("rcpt"):
                    reply(opts["rcpt"])
                else:
                    tx["rcpts"].append(line.decode(errors="replace").split("<", 1)[1]
                                       .split(">", 1)[0])
                    reply(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                conn["data"] += 1
                if held is not None:
                    writer.write(b"".join(held))
                    held = None
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                content = await _dot_content(reader)
                if content is None:
                    return
                self.messages.setdefault(name, []).append(("DATA", tx["rcpts"], content))
                writer.write(b"250 2.0.0 Ok: queued\r\n")
                tx = None
            elif verb == b"BDAT":
                conn["chunks"].append((size, last))
                tx = self._chunk(name, conn, script, tx, data, last, reply)
                if held is not None:
                    writer.write(b"".join(held))
                    held = None
            elif verb == b"RSET":
                tx = None
                reply(b"250 2.0.0 Ok\r\n")
            else:
                reply(b"250 2.0.0 Ok\r\n")

    def _chunk(self, name, conn, script, tx, data, last, reply):
        """Answer one chunk; returns the transaction state after it."""
        n = len(conn["chunks"])
        if tx is None or not tx["rcpts"]:
            reply(b"554 5.5.1 Error: no valid recipients\r\n")
            return None if last else tx
        if tx["failed"]:
            conn["after_fail"].append(n)
            reply(b"%s %s.0.0 Discarded after earlier error\r\n" % (tx["failed"], tx["failed"][:1]))
            return None if last else tx
        key = "LAST" if last else n
        if key in script:
            out = script[key]
            reply(out)
            if out[:1] in (b"4", b"5"):
                tx["failed"] = out[:3]
                return None if last else tx
            conn["wrong"] = True
            return None if last else tx
        tx["content"] += data
        if last:
            if not conn["wrong"]:
                self.messages.setdefault(name, []).append(("BDAT", tx["rcpts"], tx["content"]))
            reply(b"250 2.0.0 Ok: queued\r\n")
            return None
        reply(b"250 2.0.0 Ok: %d bytes\r\n" % len(data))
        return tx


def _bdat_args(line):
    parts = line.split()
    return int(parts[1]), len(parts) > 2 and parts[2].upper() == b"LAST"


async def _dot_content(reader):
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
    d = h.make_tmpdir("postino-bdat-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
                    "-out", "c.pem", "-days", "2", "-subj", "/CN=mx.bdat.test"], cwd=d, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
    yield ctx
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mx(tls_ctx):
    port = h.free_port_all([ip for ip, _ in SCENARIOS.values()])
    srv = ChunkMX(port, SCENARIOS, tls_ctx).start()
    yield srv
    srv.stop()


def _postino(postino_factory, port, **main):
    conf = {"smtp_port": str(port), "smtp_connection_cache_time_limit": "10s"}
    for t in ("smtp_helo_timeout", "smtp_mail_timeout", "smtp_rcpt_timeout",
              "smtp_data_init_timeout", "smtp_data_xfer_timeout", "smtp_data_done_timeout",
              "smtp_rset_timeout"):
        conf[t] = "15s"
    conf.update(main)
    return postino_factory(main=conf)


def _body(tag, lines=7000):
    """~300 KB: several chunks; lines that start with dots, a lone dot."""
    out = [("." if i % 3 == 0 else "") + "%s line %05d of the BDAT test" % (tag, i)
           for i in range(lines)]
    return "\r\n".join(out + [".", "..", "end"]) + "\r\n"


def _send(p, name, rcpts=("a", "b"), body=None):
    rcpts = ["%s@%s.bdat.test" % (r, name) for r in rcpts]
    text, _ = p.make_message(SENDER, rcpts, body=body or _body(name), subject=name)
    return p.send(SENDER, rcpts, raw=text), rcpts, text


def _outcome(p, rcpt, timeout=60):
    return p.wait_log(r"to=<%s>, .*status=" % re.escape(rcpt), timeout=timeout)[0]


def _strip_received(content):
    m = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", content)
    assert m, content[:100]
    return content[m.end():]


def _bdat_submit(port, rcpts, content, chunk=1000):
    """Submit content over BDAT (chunks of `chunk` bytes, the last with
    LAST), as it is: BDAT can carry bare CR/LF and no final line end."""
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    f = s.makefile("rb")

    def reply():
        while True:
            ln = f.readline()
            if len(ln) < 4 or ln[3:4] != b"-":
                return ln

    assert reply().startswith(b"220")
    s.sendall(b"EHLO client.test\r\n")
    assert reply().startswith(b"250")
    s.sendall(b"MAIL FROM:<%s>\r\n" % SENDER.encode())
    assert reply().startswith(b"250")
    for r in rcpts:
        s.sendall(b"RCPT TO:<%s>\r\n" % r.encode())
        assert reply().startswith(b"250")
    pieces = [content[i:i + chunk] for i in range(0, len(content), chunk)] or [b""]
    for k, piece in enumerate(pieces):
        last = k == len(pieces) - 1
        s.sendall(b"BDAT %d%s\r\n" % (len(piece), b" LAST" if last else b"") + piece)
        r = reply()
        assert r.startswith(b"250"), r
    s.sendall(b"QUIT\r\n")
    s.close()
    return r


# Content a client can only get into the queue over BDAT with
# smtpd_forbid_bare_newline = no: bare LF, bare CR, a CR before the LF that
# ends a line, what would end DATA, 8-bit text, more than 64 KB, no final
# line end (smtpd adds that one on receipt; crlf.c's own final CRLF is
# covered by tests/unit/test_crlf.c).
TRICKY = (b"From: <s@sender.test>\r\nSubject: tricky\r\nMessage-ID: <tricky@bdat.test>\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: 8bit\r\n\r\n"
          b"bare lf\nbare cr\rcr cr lf\r\r\nlf.lf\n.\nand crlf.crlf\r\n.\r\n"
          b"..two dots\r\n.\rdot cr\r\n" + "Grüße, ça va?\r\n".encode() +
          b"".join(b"%s%05d of a long body\r\n" % (b"." if i % 5 == 0 else b"x", i)
                   for i in range(10000)) +
          b"tail without a line end")


def _normalised(content):
    """What the next hop must get: every bare CR or LF made CRLF, CRLF at
    the end."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    return out if out.endswith(b"\r\n") else out + b"\r\n"


# ---------------------------------------------------------------- tests

def test_same_bytes_as_data(postino_factory, mx):
    """One message to six receivers: over BDAT pipelined (the first chunk
    in the MAIL/RCPT flight: that receiver answers nothing before it),
    over BDAT one chunk at a time, over DATA, converted to 7 bit over BDAT
    and over DATA, and over BDAT in TLS. The bytes stored are the same each
    way."""
    p = _postino(postino_factory, mx.port, smtpd_forbid_bare_newline="no")
    names = ["pipe", "lock", "data", "pipe7", "data7", "pipetls"]
    rcpts = ["u@%s.bdat.test" % n for n in names]
    r = _bdat_submit(p.port, rcpts, TRICKY)
    assert b"queued as" in r, r
    for rcpt in rcpts:
        line = _outcome(p, rcpt)
        assert "status=sent" in line, line
    got = {n: mx.messages[n] for n in names}
    for n in names:
        assert len(got[n]) == 1, (n, len(got[n]))
    via = {n: got[n][0][0] for n in names}
    assert via == {"pipe": "BDAT", "lock": "BDAT", "data": "DATA", "pipe7": "BDAT",
                   "data7": "DATA", "pipetls": "BDAT"}, via
    content = {n: got[n][0][2] for n in names}
    assert _strip_received(content["data"]) == _normalised(TRICKY)
    assert content["pipe"] == content["data"]
    assert content["lock"] == content["data"]
    assert content["pipetls"] == content["data"]
    assert mx.conns["pipetls"][0]["tls"]
    assert ", tls=TLS" in _outcome(p, "u@pipetls.bdat.test")
    # 7 bit: converted alike, whichever command carries it
    assert content["pipe7"] == content["data7"]
    assert all(b < 0x80 for b in content["pipe7"])
    assert b"quoted-printable" in content["pipe7"]
    # several chunks, LAST only on the last; one at a time without PIPELINING
    for n in ("pipe", "lock"):
        chunks = mx.conns[n][0]["chunks"]
        assert len(chunks) >= 3, chunks
        assert [last for _, last in chunks] == [False] * (len(chunks) - 1) + [True], chunks
        assert sum(size for size, _ in chunks) == len(content[n])
    lock = [c for c in mx.conns["lock"]]
    assert all(not c["unasked"] for c in lock), [c["unasked"] for c in lock]


def test_chunking_off_sends_data(postino_factory, mx):
    p = _postino(postino_factory, mx.port, smtp_chunking_enable="no")
    qid, rcpts, text = _send(p, "pipe", rcpts=["off"])
    assert "status=sent" in _outcome(p, rcpts[0])
    (via, _, content), = mx.messages["pipe"]
    assert via == "DATA"
    assert content.endswith(text.encode())
    assert not any(c["chunks"] for c in mx.conns["pipe"])


def test_chunk_failures_and_wrong_replies(postino_factory, mx):
    """A 4xx/5xx to a chunk (a middle one or LAST) fails the accepted
    recipients with that reply; any other code, or a reply that came before
    its chunk was sent, is a protocol error. Never status=sent while the
    receiver is broken; deferred mail arrives once it is fixed."""
    p = _postino(postino_factory, mx.port)
    sent = {name: _send(p, name) for name in BROKEN}
    failures = []
    for name, (qid, rcpts, _) in sent.items():
        opts = SCENARIOS[name][1]
        for r in rcpts:
            line = _outcome(p, r)
            if "status=%s" % opts["status"] not in line or "dsn=%s," % opts["dsn"] not in line \
                    or not re.search(opts["want"], line):
                failures.append("%s: not the expected outcome: %s" % (name, line))
        if mx.messages.get(name):
            failures.append("%s: the receiver stored it" % name)
        for c in mx.conns.get(name, []):
            # lock step: nothing after the refused chunk
            if not SCENARIOS[name][1].get("pipelining", True) and c["after_fail"]:
                failures.append("%s: chunks sent after a refused one: %s" % (name, c["after_fail"]))
    assert not failures, "\n".join(failures)
    assert p.log_lines(r"warning: [0-9A-F]+: protocol error: host mid354\.bdat\.test"
                       r"\[127\.0\.3\.20\]:\d+ replied 354 to BDAT \(expected 250\); "
                       r"connection dropped")
    # Fixed: what was deferred arrives once, whole.
    mx.fixed.update(BROKEN)
    for name, (qid, rcpts, text) in sent.items():
        if SCENARIOS[name][1]["status"] != "deferred":
            continue
        for r in rcpts:
            p.wait_log(r"to=<%s>, .*status=sent" % re.escape(r), timeout=60)
        msgs = mx.messages.get(name, [])
        assert len(msgs) == 1, (name, len(msgs))
        via, got_rcpts, content = msgs[0]
        assert via == "BDAT" and sorted(got_rcpts) == sorted(rcpts), (name, via, got_rcpts)
        assert content.endswith(text.encode()), name
        p.wait_removed(qid)


@pytest.mark.parametrize("size", ["small", "large"])
def test_no_recipient_no_content(postino_factory, mx, size):
    """Every RCPT refused: pipelined, only the first chunk (in the flight
    with the envelope) was sent; without PIPELINING, no BDAT at all. The
    recipients bounce with the RCPT reply, nothing is sent."""
    p = _postino(postino_factory, mx.port)
    body = _body(size, 7000 if size == "large" else 10)
    out = {}
    for name in ("norcpt", "norcptlock"):
        qid, rcpts, _ = _send(p, name, body=body)
        out[name] = rcpts
    for name, rcpts in out.items():
        for r in rcpts:
            line = _outcome(p, r)
            assert "status=bounced" in line and "(in reply to RCPT TO command)" in line, line
    chunks = [c["chunks"] for c in mx.conns["norcpt"] if c["chunks"]]
    assert len(chunks) == 1 and len(chunks[0]) == 1, chunks
    assert chunks[0][0][1] == (size == "small"), chunks  # LAST only when it is all
    assert not any(c["chunks"] or c["data"] for c in mx.conns["norcptlock"])
    assert not mx.messages


class Tap(h.AsyncServers):
    """A TCP relay to another server that keeps what the client sent."""

    def __init__(self, port, target):
        super().__init__(port, {"tap": ("127.0.0.1", target)})
        self.sent = b""

    async def session(self, key, target, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target)

        async def pipe(src, dst, keep):
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if keep:
                    self.sent += data
                dst.write(data)
                await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_w.close()


def test_postino_to_postino(postino_factory, sink):
    """A second postino (CHUNKING on receipt) takes BDAT from the first and
    hands the message on intact; several chunks of it, pipelined."""
    b = postino_factory(main={"myhostname": "hop2.test"})  # routes by MX to the sink
    tap = Tap(h.free_port(), b.port).start()
    try:
        a = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % tap.port})
        rcpt = "twohops@alonea.test"
        text, _ = a.make_message(SENDER, [rcpt], body=_body("hop"), subject="two hops")
        a.send(SENDER, rcpt, raw=text)
        m = sink.wait_to(rcpt)[0]
        line = a.wait_log(r"to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                          % (re.escape(rcpt), tap.port))[0]
    finally:
        tap.stop()
    assert m.content.endswith(text.encode())
    assert len(re.findall(rb"(?m)^Received: ", m.content)) == 2
    assert "(250 2.0.0 Ok: queued as " in line, line
    cmds = _commands(tap.sent)
    assert cmds[:3] == [b"EHLO", b"MAIL", b"RCPT"], cmds
    assert len(cmds) >= 6 and cmds[3:-1] == [b"BDAT"] * (len(cmds) - 4), cmds
    assert cmds[-1] == b"BDAT LAST", cmds  # (the connection stays cached: no QUIT yet)


def _commands(stream):
    """The verbs in what a client sent (BDAT chunks skipped)."""
    out, at = [], 0
    while at < len(stream):
        end = stream.index(b"\r\n", at)
        line = stream[at:end]
        at = end + 2
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
        if verb == b"BDAT":
            size, last = _bdat_args(line)
            at += size
            verb = b"BDAT LAST" if last else verb
        out.append(verb)
    return out
