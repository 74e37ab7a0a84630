"""Clients that misbehave, at scale (issue #12): ten thousand idle
connections on one smtpd process (memory per connection reported, new
clients still served, the process limit answered with 421), slowloris
trickling in every phase cut off by smtpd_per_request_deadline, and a
flood of connections from one address stopped by anvil while another
address is served.

smtpd runs alone, as in test_smtpd_policy.py (its Front fixture), so the
memory figure is one process's."""
import asyncio
import os
import resource
import socket
import ssl
import time

import pytest

from test_smtpd_policy import OUTSIDE, client_ctx, front, served, smtpd_rss_kb  # noqa: F401

IDLE = 10000
ASAN = "asan" in os.environ.get("POSTINO_BIN", "")


def _raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return True
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(hard, n)))
        return True
    except (ValueError, OSError):
        return False


async def _open_idle(port, n, batch=500):
    """n connections that each read their greeting and then say nothing."""
    conns, greetings = [], {}

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        line = await asyncio.wait_for(r.readline(), 60)
        greetings[line[:3]] = greetings.get(line[:3], 0) + 1
        conns.append((r, w))

    for i in range(0, n, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    return conns, greetings


def test_ten_thousand_idle_connections(front):
    # client and server ends live in this test and in smtpd: each needs
    # its own IDLE descriptors (loopback: both are counted per process)
    if not _raise_nofile(IDLE + 2048):
        pytest.skip("cannot raise RLIMIT_NOFILE to %d" % (IDLE + 2048))
    # smtpd inherits the test's descriptor limit; the process limit is the
    # number of idle clients, so one more is refused
    d = front(smtpd_client_connection_limit=IDLE, smtpd_timeout="600s")
    rss0 = smtpd_rss_kb(d)
    loop = asyncio.new_event_loop()
    try:
        conns, greetings = loop.run_until_complete(_open_idle(d.port, IDLE - 1))
        assert greetings == {b"220": IDLE - 1}, greetings
        rss1 = smtpd_rss_kb(d)
        per_conn = (rss1 - rss0) * 1024.0 / (IDLE - 1)
        print("\nsmtpd RSS %d kB idle, %d kB with %d idle sessions: %.1f kB per session"
              % (rss0, rss1, IDLE - 1, per_conn / 1024))
        if not ASAN:   # ASan's shadow memory and redzones multiply it
            assert per_conn < 32 * 1024, "%.0f bytes per idle session" % per_conn
        # a new client is served at once: a whole message queued
        assert served(d)
        # the process is full now: the next is told so, cleanly
        more, g = loop.run_until_complete(_open_idle(d.port, 1))
        full, g2 = loop.run_until_complete(_open_idle(d.port, 1))
        assert g == {b"220": 1} and g2.get(b"421") == 1, (g, g2)
        line = full[0][0]
        assert loop.run_until_complete(asyncio.wait_for(line.read(), 10)) == b""
        assert "too many connections in this process" in d.logtext()
        # one goes away: there is room again
        conns[0][1].close()
        loop.run_until_complete(asyncio.sleep(0.5))   # the close happens on the loop
        assert served(d)
        for _, w in conns + more + full:
            w.close()
    finally:
        loop.close()


# ------------------------------------------------------------ slowloris

def _trickle(sock, data, gap):
    """Send data a byte at a time; returns what the server said when it
    hung up (b"" if it never spoke), or None if it let all of it through."""
    sock.settimeout(gap)
    got = b""
    for i in range(len(data)):
        try:
            sock.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return got
        try:
            chunk = sock.recv(4096)
            if not chunk:
                return got
            got += chunk
            if b"421 4.4.2" in got:
                return got
        except socket.timeout:
            pass
    return None


def _session(port, upto):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")

    def cmd(line):
        s.sendall(line)
        while True:
            ln = f.readline()
            if ln[3:4] != b"-":
                return ln
    steps = [b"EHLO slow.test\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<x@example.org>\r\n"]
    for st in steps[:upto]:
        assert cmd(st)[:1] == b"2", st
    return s, cmd


PHASES = [
    ("greeting", 0, b"EHLO trickle.test\r\n" * 4),
    ("after EHLO", 1, b"MAIL FROM:<trickle@b.test>\r\n" * 4),
    ("DATA content", 3, None),
]


@pytest.mark.parametrize("phase,upto,data", PHASES, ids=[p[0] for p in PHASES])
def test_slowloris_cut_by_the_request_deadline(front, phase, upto, data):
    d = front(smtpd_timeout="3s", smtpd_per_request_deadline="yes")
    s, cmd = _session(d.port, upto)
    if data is None:
        assert cmd(b"DATA\r\n").startswith(b"354")
        data = b"Subject: slow\r\n\r\n" + b"x" * 200
    t0 = time.time()
    said = _trickle(s, data, 0.4)        # each read well inside smtpd_timeout
    took = time.time() - t0
    assert said is not None, "a trickling client kept its session for %.0fs" % took
    assert b"421 4.4.2" in said, said
    assert "smtpd_per_request_deadline" in d.logtext()
    assert served(d)                      # and the door stays open for others
    s.close()


def test_slowloris_bdat_cut_by_the_request_deadline(front):
    d = front(smtpd_timeout="3s", smtpd_per_request_deadline="yes")
    s, cmd = _session(d.port, 3)
    s.sendall(b"BDAT 400 LAST\r\n")
    said = _trickle(s, b"y" * 400, 0.4)
    assert said is not None and b"421 4.4.2" in said, said
    assert served(d)


def test_slowloris_tls_handshake_cut(front):
    """Port 465 (wrapper mode): a ClientHello sent a byte at a time."""
    import tempfile
    import subprocess
    tmp = tempfile.mkdtemp(prefix="slow-tls-")
    key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=mx.test"], check=True,
                   capture_output=True)
    os.chmod(key, 0o644)
    d = front(opts={"smtpd_tls_wrappermode": "yes"}, wrapper=True, smtpd_timeout="3s",
              smtpd_per_request_deadline="yes", smtpd_tls_cert_file=crt,
              smtpd_tls_key_file=key, smtpd_tls_security_level="may")
    # a real ClientHello, captured from an in-memory handshake
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(inc, out, server_hostname="mx.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    t0 = time.time()
    said = _trickle(s, hello, 0.4)
    took = time.time() - t0
    assert said is not None, "a trickled handshake kept its session for %.0fs" % took
    assert took < 30, took
    assert "timeout in the TLS handshake" in d.logtext()
    s.close()


def test_without_deadline_a_trickler_lives_on(front):
    """The default (smtpd_per_request_deadline = no, as Postfix outside
    overload) times out reads only: what the deadline is for."""
    d = front(smtpd_timeout="3s")
    s, _ = _session(d.port, 0)
    said = _trickle(s, b"EHLO trickle.test\r\n" * 2, 0.4)
    assert said is None or b"421 4.4.2" not in said, said
    s.close()


def test_fast_big_message_not_cut_by_the_deadline(front):
    """The deadline grows with content at smtpd_min_data_rate: 8 MB sent
    as fast as loopback goes is not cut at smtpd_timeout."""
    d = front(smtpd_timeout="2s", smtpd_per_request_deadline="yes", smtpd_min_data_rate="500",
              message_size_limit="20000000")
    s, cmd = _session(d.port, 3)
    assert cmd(b"DATA\r\n").startswith(b"354")
    line = b"z" * 998 + b"\r\n"
    rep = cmd(b"Subject: big\r\n\r\n" + line * 8000 + b".\r\n")
    assert rep.startswith(b"250 2.0.0"), rep
    s.close()


# ------------------------------------------------------------ one address floods

def _greet_from(port, src):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0))
    return s, s.makefile("rb").readline()


def test_flood_from_one_address_stopped_by_anvil(front):
    # example.org is one of Front's own domains: no relay needed
    d = front(mynetworks=OUTSIDE, anvil=True, smtpd_client_connection_count_limit=10)
    held, answers = [], {}
    for _ in range(200):
        s, g = _greet_from(d.port, "127.0.0.2")
        answers[g[:3]] = answers.get(g[:3], 0) + 1
        held.append(s)
    assert answers.get(b"220") == 10 and answers.get(b"421") == 190, answers
    # another address is not hurt: greeted and its mail accepted
    s, g = _greet_from(d.port, "127.0.0.3")
    assert g.startswith(b"220"), g
    f = s.makefile("rb")

    def cmd(line):
        s.sendall(line)
        while True:
            ln = f.readline()
            if ln[3:4] != b"-":
                return ln
    assert cmd(b"EHLO other.test\r\n").startswith(b"250")
    assert cmd(b"MAIL FROM:<a@other.test>\r\n").startswith(b"250")
    assert cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert cmd(b"DATA\r\n").startswith(b"354")
    assert cmd(b"Subject: hi\r\n\r\nhi\r\n.\r\n").startswith(b"250 2.0.0")
    s.close()
    for h in held:
        h.close()
