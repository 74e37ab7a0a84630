"""SMTP smuggling (CVE-2023-51764 family): a non-standard end-of-data
sequence inside a message must neither end the message at postino nor be
relayed so that the next hop sees an extra message - not even a next hop
that takes <CR>.<CR>, <LF>.<LF> and the like for the end of data."""
import asyncio
import re
import socket
import time
import uuid

import pytest

import postino_harness as h

SEQUENCES = ["\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\n.\r"]
SMUGGLED = "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n"


def _replies(sock, buf):
    """Read until at least one complete final reply line is buffered."""
    while b"\r\n" not in buf or not _final(buf):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _final(buf):
    lines = buf.split(b"\r\n")
    return any(len(ln) >= 4 and ln[3:4] == b" " for ln in lines)


def _converse(port, seq, msgid):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    out = []

    def cmd(line):
        if line is not None:
            s.sendall(line.encode())
        out.append(_replies(s, b"").decode(errors="replace"))
        return out[-1]

    try:
        assert cmd(None).startswith("220")
        assert cmd("EHLO client.test\r\n").startswith("250")
        assert cmd("MAIL FROM:<s@sender.test>\r\n").startswith("250")
        assert cmd("RCPT TO:<victim@example.test>\r\n").startswith("250")
        assert cmd("DATA\r\n").startswith("354")
        body = ("From: <s@sender.test>\r\nTo: <victim@example.test>\r\n"
                "Subject: smuggling %r\r\nMessage-ID: %s\r\n\r\nbefore" % (seq, msgid))
        s.sendall((body + seq + SMUGGLED).encode())
        time.sleep(0.3)
        s.sendall(b"QUIT\r\n")
        s.settimeout(5)
        rest = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                rest += chunk
        except socket.timeout:
            pass
        out.append(rest.decode(errors="replace"))
    finally:
        s.close()
    return out


def test_no_smuggling(postino, sink):
    ids = {}
    for seq in SEQUENCES:
        msgid = "<%s@smuggle.test>" % uuid.uuid4().hex
        ids[msgid] = seq
        transcript = _converse(postino.port, seq, msgid)
        after = transcript[-1]
        # One DATA, at most one 250 for a message (or a rejection), never two.
        assert after.count("queued as") <= 1, (seq, transcript)
    # Every message must reach the sink exactly once, as one message.
    sink.wait_for(lambda m: "victim@example.test" in m.rcpts, count=len(SEQUENCES), timeout=30)
    time.sleep(3)
    msgs = sink.received(lambda m: "victim@example.test" in m.rcpts)
    assert not [m for m in sink.received() if m.mail_from.lower() == "evil@x"], \
        "a smuggled message was delivered"
    got = {}
    for m in msgs:
        got.setdefault(m.msg.get("Message-ID"), []).append(m)
    for msgid, seq in ids.items():
        assert len(got.get(msgid, [])) == 1, "sequence %r: %d messages at the sink" % (
            seq, len(got.get(msgid, [])))
    assert len(msgs) == len(SEQUENCES)


# ---------------------------------------------------------------- lenient next hop
#
# Issue 7, item 2: whatever smtpd_forbid_bare_newline lets into the queue,
# what the delivery agent sends must not contain anything a lenient
# receiver takes for the end of data. LenientMX accepts any of CR, LF or
# CRLF, then ".", then CR, LF or CRLF as the end of data (<LF>.<LF>,
# <CR>.<CR>, <LF>.<CR><LF>, <CR><LF>.<CR>, ... as some gateways do); the
# one on NULSTRIP_IP also drops NUL bytes first (as some do). Each counts
# the transactions it accepted: a smuggled message is one more transaction,
# from evil@x.

LENIENT_IP, NULSTRIP_IP = "127.0.2.1", "127.0.2.2"
LENIENT_RCPTS = ["victim@lenient.test", "victim@nulstrip.test"]
SEC_CONSULT = ["\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r.\r", "\r\n\x00.\r\n", "\r\n.\n", "\n.\r"]
VARIANTS = SEC_CONSULT + [s.replace(".", "..") for s in SEC_CONSULT]
SMUGGLED_ALL = ("MAIL FROM:<evil@x>\r\n" + "".join("RCPT TO:<%s>\r\n" % r for r in LENIENT_RCPTS) +
                "DATA\r\nsmuggled\r\n.\r\n")
LENIENT_EOD = re.compile(rb"(?:\r\n|\r|\n)\.(?:\r\n|\r|\n)")


class LenientMX(h.AsyncServers):
    """A receiver that parses too leniently; records (sender, rcpts,
    content) of every transaction it accepted, per listening address."""

    def __init__(self, port):
        super().__init__(port, {LENIENT_IP: (LENIENT_IP, False), NULSTRIP_IP: (NULSTRIP_IP, True)})
        self.tx = {LENIENT_IP: [], NULSTRIP_IP: []}

    async def session(self, ip, strip_nul, reader, writer):
        state = {"buf": b""}
        sender, rcpts = None, []
        writer.write(b"220 lenient.test ESMTP\r\n")
        try:
            while True:
                await writer.drain()
                line = await self._line(reader, state)
                if line is None:
                    return
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-lenient.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    sender, rcpts = line.split(b"<", 1)[1].split(b">", 1)[0].decode(), []
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    rcpts.append(line.split(b"<", 1)[1].split(b">", 1)[0].decode())
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA" and sender is not None and rcpts:
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    content = await self._data(reader, state, strip_nul)
                    if content is None:
                        return
                    self.tx[ip].append((sender, rcpts, content))
                    sender, rcpts = None, []
                    writer.write(b"250 2.0.0 Ok: queued as %d\r\n" % len(self.tx[ip]))
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                elif verb == b"RSET":
                    sender, rcpts = None, []
                    writer.write(b"250 2.0.0 Ok\r\n")
                else:
                    writer.write(b"250 2.0.0 Ok\r\n" if verb == b"NOOP" else b"502 5.5.2 Error\r\n")
        except (OSError, asyncio.TimeoutError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _more(reader, state):
        chunk = await asyncio.wait_for(reader.read(65536), 60)
        state["buf"] += chunk
        return bool(chunk)

    async def _line(self, reader, state):
        """A command line ended by CR, LF or CRLF; empty lines skipped."""
        while True:
            m = re.search(rb"[\r\n]", state["buf"])
            if m:
                line, state["buf"] = state["buf"][:m.start()], state["buf"][m.end():]
                if m.group() == b"\r" and state["buf"][:1] == b"\n":
                    state["buf"] = state["buf"][1:]
                if line.strip():
                    return line.strip()
                continue
            if not await self._more(reader, state):
                return None

    async def _data(self, reader, state, strip_nul):
        """Content up to the first lenient end of data; the rest stays in
        the buffer as commands."""
        while True:
            data = b"\n" + (state["buf"].replace(b"\0", b"") if strip_nul else state["buf"])
            m = LENIENT_EOD.search(data)
            if m:
                state["buf"] = data[m.end():]
                return re.sub(rb"(^|[\r\n])\.", rb"\1", data[1:m.start()])
            if not await self._more(reader, state):
                return None


def _final_reply(sock, buf):
    """Read to the next final reply line ("NNN "); returns (line, rest)."""
    while True:
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if len(line) >= 4 and line[3:4] == b" ":
                return line.decode(errors="replace"), buf
        chunk = sock.recv(4096)
        if not chunk:
            return "", buf
        buf += chunk


def _smuggle(port, seq, msgid):
    """One transaction to postino with the variant and a smuggled
    transaction behind it; returns every reply text postino sent after the
    content (to count its "queued as")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    buf = b""
    try:
        for cmd in [None, "EHLO client.test", "MAIL FROM:<s@sender.test>"] + \
                   ["RCPT TO:<%s>" % r for r in LENIENT_RCPTS] + ["DATA"]:
            if cmd:
                s.sendall(cmd.encode() + b"\r\n")
            line, buf = _final_reply(s, buf)
            assert line[:1] in "23", (cmd, line)
        body = ("From: <s@sender.test>\r\nTo: <victim@lenient.test>\r\nSubject: smuggling %r\r\n"
                "Message-ID: %s\r\n\r\nbefore" % (seq, msgid))
        s.sendall((body + seq + SMUGGLED_ALL).encode())
        first, buf = _final_reply(s, buf)
        s.sendall(b"QUIT\r\n")
        rest = buf
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    finally:
        s.close()
    return first + "\r\n" + rest.decode(errors="replace")


@pytest.mark.dns([("a", "lenient.test", LENIENT_IP), ("a", "nulstrip.test", NULSTRIP_IP)])
@pytest.mark.parametrize("mode", ["normalize", "reject", "no"])
def test_lenient_next_hop_sees_one_message(postino_factory, mode):
    port = h.free_port_all([LENIENT_IP, NULSTRIP_IP])
    mx = LenientMX(port).start()
    try:
        p = postino_factory(main={"smtp_port": str(port), "smtpd_forbid_bare_newline": mode,
                                  "smtpd_forbid_bare_newline_exclusions": ""})
        accepted, refused = {}, {}
        for seq in VARIANTS:
            msgid = "<%s@smuggle.test>" % uuid.uuid4().hex
            replies = _smuggle(p.port, seq, msgid)
            n = replies.count("queued as")
            assert n <= 1, "postino itself took %r for an end of data: %s" % (seq, replies)
            (accepted if n == 1 else refused)[msgid] = seq
        if mode != "reject":
            assert len(accepted) == len(VARIANTS), refused
        for r in LENIENT_RCPTS:
            if accepted:   # in reject mode smtpd may refuse every variant
                p.wait_log(r"to=<%s>, .*status=sent" % re.escape(r), count=len(accepted),
                           timeout=60)
        p.wait_queue_empty(timeout=30)
        failures = []
        for ip, txs in mx.tx.items():
            evil = [t for t in txs if t[0] == "evil@x"]
            if evil:
                failures.append("%s: %d smuggled message(s) from evil@x" % (ip, len(evil)))
            for msgid, seq in list(accepted.items()) + list(refused.items()):
                mine = [t for t in txs if msgid.encode() in t[2]]
                want = 1 if msgid in accepted else 0
                if len(mine) != want:
                    failures.append("%s: %r: %d transaction(s) instead of %d"
                                    % (ip, seq, len(mine), want))
                elif mine and not re.search(rb"MAIL FROM:<evil@x>\r\n.*\r\nsmuggled$", mine[0][2],
                                            re.S):
                    failures.append("%s: %r: content cut short" % (ip, seq))
            if len(txs) != len(accepted):
                failures.append("%s: %d transactions for %d accepted messages"
                                % (ip, len(txs), len(accepted)))
        assert not failures, "mode %s:\n%s" % (mode, "\n".join(failures))
    finally:
        mx.stop()
