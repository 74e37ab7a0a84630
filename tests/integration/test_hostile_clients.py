"""Hostile input at the front door (issue #3, "Hostile input"): smuggling
end-of-data variants over plaintext and TLS, NUL bytes, line-length edges,
shell and expansion metacharacters, CR/LF injection through DSN parameters,
malformed MAIL parameters, a TLS ClientHello on the plaintext port, random
bytes. Every case asserts the reply and that a well-behaved client is
served right after (the process lives on and is not confused).
"""
import os
import random
import re
import socket
import time

import pytest

import postino_harness as h
from test_smtpd_policy import (cert, client_ctx, client_hello, front, served,  # noqa: F401
                            session, starttls)

SMUGGLE = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n",
           b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n.\r\r\n"]
SMUGGLED = (b"MAIL FROM:<smuggler@evil.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled body\r\n")


def open_session(d, tls):
    r = d.raw()
    assert r.recv_reply().startswith(b"220")
    assert r.cmd(b"EHLO client.test\r\n").startswith(b"250")
    if tls:
        starttls(r)
        assert r.cmd(b"EHLO client.test\r\n").startswith(b"250")
    return r


def no_more_replies(r, wait=0.5):
    """Nothing else arrives: a NOOP's reply is the very next one."""
    time.sleep(wait)
    assert r.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("mark", SMUGGLE, ids=[repr(m)[2:-1] for m in SMUGGLE])
def test_smuggled_transaction_stays_data(front, cert, tls, mark):
    d = front(smtpd_tls_security_level="may", **cert)
    r = open_session(d, tls)
    assert r.cmd(b"MAIL FROM:<honest@b.test>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    rep = r.cmd(b"Subject: carrier\r\n\r\ncarrier body" + mark + SMUGGLED + b".\r\n")
    assert rep.startswith(b"250 2.0.0 Ok: queued as"), rep
    no_more_replies(r)
    files = d.queue_files()
    assert len(files) == 1, files
    env = d.envelope(files[0])
    assert "sender=honest@b.test\n" in env and "victim" not in env
    assert b"MAIL FROM:<smuggler@evil.test>" in d.content(files[0])
    assert served(d, tls=tls)


@pytest.mark.parametrize("line", [
    b"EH\x00LO client.test", b"MAIL FROM:<a\x00b@b.test>", b"MAIL FROM:<a@b.test> SIZE=1\x000",
    b"RCPT TO:<x@example.org\x00>", b"\x00", b"NOOP\x00", b"MAIL FROM:<a@b.test>\x00 BODY=8BITMIME",
])
def test_nul_bytes_in_commands(front, line):
    d = front()
    r = session(d)
    assert r.cmd(line + b"\r\n") == b"500 5.5.2 Error: bad syntax\r\n"
    no_more_replies(r, 0)
    assert served(d)


@pytest.mark.parametrize("n", [511, 512, 513, 999, 1000, 1001])
def test_line_length_edges(front, n):
    d = front()
    r = session(d)
    # a command line of exactly n bytes (CRLF excluded) is a command
    assert r.cmd(b"NOOP " + b"x" * (n - 5) + b"\r\n") == b"250 2.0.0 Ok\r\n"
    # an address that long breaks RFC 5321 limits: a syntax error, not a crash
    rep = r.cmd(b"MAIL FROM:<" + b"a" * (n - 24) + b"@b.test>\r\n")
    assert rep.startswith(b"501 5.1.7"), rep
    # content lines of that length are kept intact
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    line = b"L" * n
    assert r.cmd(b"Subject: long\r\n\r\n" + line + b"\r\n.\r\n").startswith(b"250 2.0.0")
    assert d.content(d.queue_files()[0]).endswith(b"\r\n\r\n" + line + b"\r\n")
    assert served(d)


def test_overlong_line_and_no_crlf_at_all(front):
    d = front()
    r = session(d)
    assert r.cmd(b"NOOP " + b"x" * 5000 + b"\r\n") == b"500 5.5.2 Error: line too long\r\n"
    r.send(b"Z" * 300000)  # never a line end: drained, not buffered
    time.sleep(0.3)
    assert r.cmd(b"\r\n") == b"500 5.5.2 Error: line too long\r\n"
    no_more_replies(r, 0)
    # a client that sends a command without CRLF and half-closes
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.recv(1024)
    s.sendall(b"MAIL FROM:<a@b.test>")
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1024) == b""
    s.close()
    assert "lost connection after CONNECT from unknown[127.0.0.1]" in d.logtext()
    assert served(d)


MARKER = "/tmp/postino-hostile-pwned"


@pytest.mark.parametrize("cmd,ok", [
    (b"MAIL FROM:<;sh -c id;>", (b"501",)),
    (b"MAIL FROM:<;touch${IFS}" + MARKER.encode() + b";@b.test>", (b"250", b"501")),
    (b"MAIL FROM:<${run{/bin/touch " + MARKER.encode() + b"}}@b.test>", (b"250", b"501")),
    (b"MAIL FROM:<$(touch " + MARKER.encode() + b")@b.test>", (b"250", b"501")),
    (b"MAIL FROM:<`touch " + MARKER.encode() + b"`@b.test>", (b"250", b"501")),
    (b"MAIL FROM:<\"|touch " + MARKER.encode() + b"\"@b.test>", (b"250", b"501")),
])
def test_shell_and_expansion_metacharacters(front, cmd, ok):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    d = front()
    r = session(d)
    rep = r.cmd(cmd + b"\r\n")
    assert rep[:3] in ok, rep
    if rep.startswith(b"250"):
        assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
        assert r.cmd(b"RCPT TO:<\"|touch " + MARKER.encode() + b"\"@example.org>\r\n")[:1] \
            in (b"2", b"5")
        assert r.cmd(b"DATA\r\n").startswith(b"354")
        body = b"Subject: ${run{/bin/touch %s}}\r\n\r\n$(touch %s)\r\n" % (
            MARKER.encode(), MARKER.encode())
        assert r.cmd(body + b".\r\n").startswith(b"250 2.0.0")
        c = d.content(d.queue_files()[0])
        assert body in c  # stored literally, as data
    time.sleep(0.2)
    assert not os.path.exists(MARKER)
    assert served(d)


@pytest.mark.parametrize("mail,rcpt", [
    (b"MAIL FROM:<a@b.test> ENVID=x+0D+0AX-Injected:+yes", None),
    (b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@example.org> ORCPT=rfc822;a+0D+0AX:y@d"),
    (b"MAIL FROM:<a@b.test> ENVID=x+0AX-Injected:+yes", None),
    (b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@example.org> ORCPT=rfc822;a+0Dx@d"),
])
def test_crlf_injection_in_dsn_parameters_refused(front, mail, rcpt):
    d = front()
    r = session(d)
    rep = r.cmd(mail + b"\r\n")
    if rcpt is None:
        assert rep == b"501 5.5.4 Error: Bad ENVID parameter syntax\r\n"
    else:
        assert rep.startswith(b"250")
        assert r.cmd(rcpt + b"\r\n") == b"501 5.5.4 Error: Bad ORCPT parameter syntax\r\n"
    no_more_replies(r, 0)
    assert served(d)


@pytest.mark.parametrize("cmd,want", [
    (b"MAIL FROM:<\"a@b.test>", b"501"),
    (b"MAIL FROM:<a@b.test> =foo", b"501 5.5.4"),
    (b"MAIL FROM:<a@b.test> =", b"501 5.5.4"),
    (b"MAIL FROM:<a@b.test> SIZE=\"10", b"501 5.5.4"),
    (b"MAIL FROM:<a@b.test> FOO=\"bar", b"555 5.5.4"),
    (b"MAIL FROM:<a@b.test> BODY==8BITMIME", b"501 5.5.4"),
    (b"MAIL FROM:<a@b.test> SIZE", b"501 5.5.4"),
    (b"MAIL FROM:<\"unbalanced@b.test\" SIZE=1", b"501"),
    (b"RCPT TO:<x@example.org> NOTIFY=", b"501 5.5.4"),
    (b"RCPT TO:<x@example.org> ORCPT=rfc822", b"501 5.5.4"),
])
def test_malformed_parameters(front, cmd, want):
    d = front()
    r = session(d)
    if cmd.startswith(b"RCPT"):
        assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    rep = r.cmd(cmd + b"\r\n")
    assert rep.startswith(want), rep
    no_more_replies(r, 0)
    assert served(d)


def test_tls_client_hello_on_plaintext_port(front):
    d = front()
    r = d.raw()
    r.recv_reply()
    r.send(client_hello())
    assert r.recv_reply().startswith(b"500 5.5.2")
    assert served(d)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_bytes(front, seed):
    d = front(smtpd_error_sleep_time="0")
    rnd = random.Random(seed)
    r = d.raw()
    r.recv_reply()
    blob = bytes(rnd.getrandbits(8) for _ in range(20000))
    try:
        r.send(blob + b"\r\nQUIT\r\n")
        got = b""
        r.s.settimeout(5)
        while True:
            x = r.s.recv(65536)
            if not x:
                break
            got += x
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        got = b""
    # whatever came back is made of well-formed replies
    for line in got.split(b"\r\n"):
        assert line == b"" or re.match(rb"^[2-5]\d\d[ -]", line), line
    assert served(d)


# ---------------------------------------------------------------- whole system

def test_no_injected_header_in_bounce(relay_postino, sink):
    """Through the whole system: a message that bounces, sent with every
    injection attempt the front door lets through, yields a DSN with no
    injected header line."""
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 <bad@example.test>: no such user")
    r = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    f = r.makefile("rwb")

    def cmd(line):
        f.write(line + b"\r\n")
        f.flush()
        rep = b""
        while True:
            ln = f.readline()
            rep += ln
            if len(ln) < 4 or ln[3:4] != b"-":
                return rep

    assert f.readline().startswith(b"220")
    assert cmd(b"EHLO client.test").startswith(b"250")
    rep = cmd(b"MAIL FROM:<s@sender.test> ENVID=x+0D+0AX-Injected:+yes RET=HDRS")
    if not rep.startswith(b"250"):
        assert rep.startswith(b"501")
        assert cmd(b"MAIL FROM:<s@sender.test> ENVID=env+2Bid RET=HDRS").startswith(b"250")
    rep = cmd(b"RCPT TO:<bad@example.test> ORCPT=rfc822;a+0D+0AX-Injected:y@d")
    if not rep.startswith(b"250"):
        assert rep.startswith(b"501")
        assert cmd(b"RCPT TO:<bad@example.test> ORCPT=rfc822;bad+2Bo@example.test") \
            .startswith(b"250")
    assert cmd(b"DATA").startswith(b"354")
    assert cmd(b"Subject: bounce me\r\n\r\nbody\r\n.").startswith(b"250")
    cmd(b"QUIT")
    r.close()
    dsn = sink.wait_for(lambda m: m.mail_from == "" and "s@sender.test" in m.rcpts,
                        timeout=30)[0]
    raw = dsn.content if isinstance(dsn.content, bytes) else str(dsn.content).encode()
    assert not re.search(rb"(^|\n)X-Injected:", raw, re.I), raw
    assert b"bad@example.test" in raw
