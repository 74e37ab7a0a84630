"""CHUNKING / BDAT (RFC 3030) on receipt, with a hand-written raw-socket
client: single and pipelined chunks, chunk boundaries inside CRLF and
inside header lines, message_size_limit, BDAT 0 LAST, the error cases
(503, 552, discarded chunks after a failure, 521 and close for a size
that cannot be read), the DATA content rules (bare CR/LF, NUL, hops)
applied to BDAT content, and every accepted message delivered to the sink
byte for byte. swaks has no BDAT option, hence the own client."""
import re
import socket
import time

import pytest

# Lines that would be special under DATA: a leading dot, a lone dot, and
# what looks like commands; none of it is special inside a BDAT chunk.
BODY = (b"From: <a@sender.test>\r\nTo: <u@example.test>\r\nSubject: chunked\r\n"
        b"Message-ID: <%s@bdat.test>\r\n\r\n"
        b"line one\r\n.leading dot\r\n.\r\n..two dots\r\nMAIL FROM:<evil@x>\r\n"
        b"\xc3\xa9t\xc3\xa9 8bit\r\nlast line\r\n")


class Client:
    """A byte-exact SMTP client that speaks BDAT."""

    def __init__(self, port, timeout=15):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        assert self.reply().startswith(b"220")

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln + b"\n"

    def reply(self):
        out = b""
        while True:
            ln = self.line()
            out += ln
            if len(ln) < 4 or ln[3:4] != b"-":
                return out

    def cmd(self, data):
        self.send(data)
        return self.reply()

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def envelope(self, rcpt=b"u@example.test"):
        assert self.cmd(b"EHLO client.test\r\n").startswith(b"250")
        assert self.cmd(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
        assert self.cmd(b"RCPT TO:<" + rcpt + b">\r\n").startswith(b"250")

    def closed(self):
        try:
            self.s.settimeout(5)
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.s.close()


def bdat(data, last=False):
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


def body(tag):
    return BODY % tag.encode()


def delivered(sink, tag, count=1):
    """The sink's copy of the message with this Message-ID tag."""
    want = "<%s@bdat.test>" % tag
    msgs = sink.wait_for(lambda m: m.msg.get("Message-ID") == want, count=count)
    return msgs


def stored_part(content):
    """Content after our own Received: header (its continuation lines start
    with a tab)."""
    lines = content.split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


@pytest.fixture
def mta(postino_factory, sink):
    return postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port})


def test_ehlo_offers_chunking_not_binarymime(mta):
    c = Client(mta.port)
    ehlo = c.cmd(b"EHLO client.test\r\n")
    assert b"250-CHUNKING\r\n" in ehlo
    assert b"BINARYMIME" not in ehlo
    c.close()


def test_single_chunk_last_delivered_intact(mta, sink):
    c = Client(mta.port)
    c.envelope()
    msg = body("single")
    rep = c.cmd(bdat(msg, last=True))
    assert re.match(rb"250 2\.0\.0 Ok: queued as [0-9A-F]+\r\n$", rep), rep
    assert c.cmd(b"QUIT\r\n").startswith(b"221")
    m = delivered(sink, "single")[0]
    assert stored_part(m.content) == msg
    assert m.content.startswith(b"Received: from client.test")
    mta.wait_log(r"message-id=<single@bdat\.test>")
    mta.wait_log(r"disconnect from .* bdat=1 ")


def test_pipelined_chunks_in_one_write(mta, sink):
    msg = body("pipelined")
    parts = [msg[:10], msg[10:47], msg[47:48], msg[48:]]
    c = Client(mta.port)
    assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")
    c.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@example.test>\r\n" +
           b"".join(bdat(p, last=(i == len(parts) - 1)) for i, p in enumerate(parts)) +
           b"NOOP\r\nQUIT\r\n")
    r = c.replies(8)
    assert r[0].startswith(b"250 2.1.0") and r[1].startswith(b"250 2.1.5")
    assert r[2:5] == [b"250 2.0.0 Ok: 10 bytes\r\n", b"250 2.0.0 Ok: 37 bytes\r\n",
                      b"250 2.0.0 Ok: 1 bytes\r\n"]
    assert r[5].startswith(b"250 2.0.0 Ok: queued as"), r[5]
    assert r[6].startswith(b"250") and r[7].startswith(b"221")
    assert stored_part(delivered(sink, "pipelined")[0].content) == msg
    mta.wait_log(r"disconnect from .* bdat=4 .*noop=1")


def test_boundaries_inside_crlf_and_header_lines(postino_factory, sink):
    """Chunk and TCP boundaries inside CR LF and inside header names count
    for nothing: the content and the header scan (hops, Message-ID) are
    what they would be in one piece."""
    mta = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                                "hopcount_limit": "3"})
    hdrs = b"".join(b"Received: from hop%d by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i
                    for i in range(3))
    for tag, extra in (("hops-ok", b""), ("hops-over", b"Delivered-To: y@example.test\r\n")):
        msg = hdrs + extra + body(tag)
        cuts = sorted({msg.index(b"\r\n") + 1, msg.index(b"Rec", 5) + 3,
                       msg.index(b"Message-ID") + 7, msg.index(b"\r\n\r\n") + 3,
                       len(msg) - 1})
        c = Client(mta.port)
        c.envelope()
        prev = 0
        replies = []
        for cut in cuts + [len(msg)]:
            piece = msg[prev:cut]
            last = cut == len(msg)
            head = b"BDAT %d%s\r\n" % (len(piece), b" LAST" if last else b"")
            # the command, then the octets byte by byte over the socket
            c.send(head + piece[:1])
            for j in range(1, len(piece)):
                c.send(piece[j:j + 1])
                time.sleep(0.001)
            replies.append((len(piece), c.reply()))
            prev = cut
        oks = [r for n, r in replies[:-1] if r == b"250 2.0.0 Ok: %d bytes\r\n" % n]
        if tag == "hops-ok":
            assert len(oks) == len(cuts), replies
            assert replies[-1][1].startswith(b"250 2.0.0 Ok: queued as"), replies
            m = delivered(sink, tag)[0]
            assert stored_part(m.content) == msg
            mta.wait_log(r"message-id=<hops-ok@bdat\.test>")
        else:
            # the 4th hop is refused at the chunk that ends its header line,
            # the rest is discarded
            codes = [r[:4] for n, r in replies]
            i = codes.index(b"554 ")
            assert replies[i][1] == b"554 5.4.0 Error: too many hops\r\n"
            assert codes[:i] == [b"250 "] * i and codes[i + 1:] == [b"551 "] * (len(codes) - i - 1)
            log = mta.log()
            assert re.search(r"reject: BDAT from \S+: 554 5\.4\.0 Error: too many hops "
                             r"\(4 Received:/Delivered-To: headers, hopcount_limit=3\)", log), log
        c.cmd(b"QUIT\r\n")
        c.close()
    time.sleep(1)
    assert not [m for m in sink.received() if m.msg.get("Message-ID") == "<hops-over@bdat.test>"]


def test_size_limit(postino_factory, sink):
    mta = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                                "message_size_limit": "2000"})
    c = Client(mta.port)
    c.envelope()
    # the second chunk takes the message past the limit: 552, its octets
    # are read and dropped (they hold "QUIT": never run), later chunks are
    # discarded, LAST ends the transaction
    assert c.cmd(bdat(b"x" * 1500)) == b"250 2.0.0 Ok: 1500 bytes\r\n"
    assert c.cmd(bdat(b"QUIT\r\n" * 100)) == b"552 5.3.4 Chunk exceeds message size limit\r\n"
    assert c.cmd(bdat(b"y" * 10)) == b"551 5.0.0 Discarded 10 bytes after earlier error\r\n"
    assert c.cmd(bdat(b"z" * 10, last=True)) == \
        b"551 5.0.0 Discarded 10 bytes after earlier error\r\n"
    assert c.cmd(b"NOOP\r\n").startswith(b"250")
    # a new transaction works; one oversized LAST chunk is refused alone
    assert c.cmd(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    assert c.cmd(b"RCPT TO:<u@example.test>\r\n").startswith(b"250")
    assert c.cmd(bdat(b"QUIT\r\n" * 500, last=True)) == \
        b"552 5.3.4 Chunk exceeds message size limit\r\n"
    c.envelope()
    assert c.cmd(bdat(body("small"), last=True)).startswith(b"250 2.0.0 Ok: queued as")
    assert c.cmd(b"QUIT\r\n").startswith(b"221")
    delivered(sink, "small")
    assert len(mta.log_lines(r"BDAT request from \S+ exceeds message size limit")) == 2


def test_bdat_zero_last(mta, sink):
    c = Client(mta.port)
    c.envelope(rcpt=b"empty@example.test")
    assert c.cmd(b"BDAT 0 LAST\r\n").startswith(b"250 2.0.0 Ok: queued as")
    c.cmd(b"QUIT\r\n")
    m = sink.wait_to("empty@example.test")[0]
    assert stored_part(m.content) == b""


def test_empty_chunks_then_last(mta, sink):
    msg = body("empties")
    c = Client(mta.port)
    c.envelope()
    assert c.cmd(b"BDAT 0\r\n") == b"250 2.0.0 Ok: 0 bytes\r\n"
    assert c.cmd(bdat(msg)).startswith(b"250 2.0.0 Ok: %d bytes" % len(msg))
    assert c.cmd(b"BDAT 0 last\r\n").startswith(b"250 2.0.0 Ok: queued as")
    assert stored_part(delivered(sink, "empties")[0].content) == msg


def test_sequence_errors(mta, sink):
    c = Client(mta.port)
    assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")
    # no MAIL: 503, and the octets (a whole command) are consumed
    assert c.cmd(bdat(b"QUIT\r\n")) == b"503 5.5.1 Error: need MAIL command\r\n"
    assert c.cmd(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    assert c.cmd(bdat(b"QUIT\r\n", last=True)) == b"503 5.5.1 Error: need RCPT command\r\n"
    assert c.cmd(b"RCPT TO:<u@example.test>\r\n").startswith(b"250")
    assert c.cmd(bdat(b"Subject: s\r\n")).startswith(b"250 2.0.0 Ok: 12 bytes")
    assert c.cmd(b"DATA\r\n") == b"503 5.5.1 Error: DATA after BDAT\r\n"
    assert c.cmd(b"RCPT TO:<v@example.test>\r\n") == b"503 5.5.1 Error: RCPT after BDAT\r\n"
    assert c.cmd(b"MAIL FROM:<b@sender.test>\r\n").startswith(b"503 5.5.1")
    # RSET discards the chunks so far
    assert c.cmd(b"RSET\r\n").startswith(b"250")
    assert c.cmd(bdat(b"x", last=True)) == b"503 5.5.1 Error: need MAIL command\r\n"
    # DATA, then a whole new transaction by BDAT in the same session
    c.envelope()
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(b"Subject: d\r\n\r\nbody\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as")
    c.envelope()
    assert c.cmd(bdat(body("after-data"), last=True)).startswith(b"250 2.0.0 Ok: queued as")
    assert c.cmd(b"QUIT\r\n").startswith(b"221")
    delivered(sink, "after-data")
    sink.wait_for(count=2)
    time.sleep(1)
    assert len(sink.received()) == 2  # the DATA one and the BDAT one only
    mta.wait_log(r"disconnect from .* bdat=2/5 ")


@pytest.mark.parametrize("line", [b"BDAT\r\n", b"BDAT x\r\n", b"BDAT 5 FOO\r\n",
                                  b"BDAT -1\r\n", b"BDAT 5LAST\r\n", b"BDAT 5 LAST x\r\n",
                                  b"BDAT 99999999999999999999999\r\n"])
def test_size_syntax_error_closes(mta, line):
    """After a BDAT whose size cannot be read the octets cannot be told from
    commands: 521 and close, as Postfix does."""
    c = Client(mta.port)
    c.envelope()
    c.send(line + b"RSET\r\n")
    assert c.reply() == b"521 5.5.4 Syntax: BDAT count [LAST]\r\n"
    assert c.closed()
    mta.wait_log(r"warning: \S+: malformed BDAT command syntax from \S+: %s" %
                 re.escape(line.strip().decode()))


def test_reject_mode_bare_lf_and_nul(postino_factory, sink):
    mta = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                                "smtpd_forbid_bare_newline": "reject",
                                "smtpd_forbid_bare_newline_exclusions": ""})
    c = Client(mta.port)
    c.envelope()
    assert c.cmd(bdat(b"Subject: s\r\n\r\nok\r\n")).startswith(b"250 2.0.0 Ok:")
    # the bare LF is refused at the chunk that holds it
    assert c.cmd(bdat(b"bare\nlf\r\n")) == b"550 5.5.2 Error: bare <LF> received\r\n"
    assert c.cmd(bdat(b"more\r\n", last=True)) == \
        b"551 5.0.0 Discarded 6 bytes after earlier error\r\n"
    c.envelope()
    # a CR at the end of one chunk and LF at the start of the next: a CRLF
    assert c.cmd(bdat(b"Subject: s\r\n\r\nsplit\r")).startswith(b"250 2.0.0 Ok:")
    assert c.cmd(bdat(b"\nnul\x00here\r\n", last=True)) == \
        b"550 5.6.0 Error: NUL byte received\r\n"
    c.envelope()
    msg = body("reject-clean")
    assert c.cmd(bdat(msg[:-1])).startswith(b"250 2.0.0 Ok:")  # ends in CR
    assert c.cmd(bdat(b"\n", last=True)).startswith(b"250 2.0.0 Ok: queued as")
    c.cmd(b"QUIT\r\n")
    log = mta.log()
    assert re.search(r"reject: bare <LF> received from", log)
    assert re.search(r"reject: NUL byte received from", log)
    m = delivered(sink, "reject-clean")[0]
    assert stored_part(m.content) == msg


def test_normalize_mode_content_rules(mta, sink):
    """Default mode: bare LF/CR become CRLF, NULs are dropped, a dot after a
    bare line end stays, a last line without CRLF gets one."""
    head = (b"From: <a@sender.test>\r\nSubject: norm\r\nMessage-ID: <norm@bdat.test>\r\n\r\n")
    c = Client(mta.port)
    c.envelope()
    assert c.cmd(bdat(head + b"a\n.b\r.c\x00d\r\n.\n", last=False)).startswith(b"250")
    assert c.cmd(bdat(b"no end", last=True)).startswith(b"250 2.0.0 Ok: queued as")
    m = delivered(sink, "norm")[0]
    assert stored_part(m.content) == head + b"a\r\n.b\r\n.cd\r\n.\r\nno end\r\n"
