"""smtpd alone: the SMTP protocol, limits, relay control and the queue files it writes.

Each test starts bin/smtpd by hand (no master, no qmgr) on a random loopback
port with its own temp spool; the listening socket is handed over as fd 3
exactly as master does. qmgr is absent, so notifications just fail to
connect - smtpd must not care.
"""
import os
import glob
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTINO_BIN", os.path.join(ROOT, "bin"))
SMTPD = os.path.join(BIN, "smtpd")
HOST = "mx.test"


class Smtpd:
    def __init__(self, params):
        self.dir = tempfile.mkdtemp(prefix="smtpd-test-")
        self.spool = os.path.join(self.dir, "spool")
        self.log = os.path.join(self.dir, "maillog")
        os.makedirs(self.spool)
        conf = {
            "myhostname": HOST,
            "mydomain": "test",
            "queue_directory": self.spool,
            "maillog_file": self.log,
            "mynetworks": "127.0.0.0/8",
            "mydestination": "$myhostname, example.org",
            # any user at the local domains (Postfix's empty
            # local_recipient_maps): these tests are not about users
            "local_recipient_maps": "",
        }
        conf.update(params)
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(64)
        self.port = lsock.getsockname()[1]
        fd = lsock.fileno()

        def child_setup():
            os.dup2(fd, 3)  # the new descriptor is inheritable

        self.stderr_path = os.path.join(self.dir, "stderr")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [SMTPD, "-c", self.dir, "-n", "smtpd", "-t", "inet", "-s", "1"],
                preexec_fn=child_setup, close_fds=False, stderr=err)
        lsock.close()
        # The listening socket exists already; just make sure the daemon lives.
        s = self.raw()
        assert s.recv_reply().startswith(b"220 ")
        s.close()

    def raw(self, timeout=10):
        return Raw(self.port, timeout)

    def smtp(self):
        c = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        return c

    def queue_files(self):
        return sorted(glob.glob(os.path.join(self.spool, "queue", "*", "*")))

    def content(self, path):
        data = open(path, "rb").read()
        m = re.match(rb"POSTINOQ1 c=(\d+) l=(\d+)\n", data)
        assert m, data[:60]
        off, ln = int(m.group(1)), int(m.group(2))
        return data[off:off + ln]

    def envelope(self, path):
        data = open(path, "rb").read()
        m = re.match(rb"POSTINOQ1 c=(\d+) l=(\d+)\n", data)
        return data[40:int(m.group(1))].decode()

    def logtext(self):
        time.sleep(0.1)
        try:
            return open(self.log).read()
        except FileNotFoundError:
            return ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = open(self.stderr_path, "rb").read().decode(errors="replace")
        shutil.rmtree(self.dir, ignore_errors=True)
        # Under SANITIZE=1 builds: any report fails the test.
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert "panic:" not in err, err


class Raw:
    """A byte-exact SMTP client for what smtplib cannot send."""

    def __init__(self, port, timeout):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l + b"\n"

    def recv_reply(self):
        out = b""
        while True:
            l = self.line()
            out += l
            if len(l) < 4 or l[3:4] != b"-":
                return out

    def cmd(self, data):
        self.send(data)
        return self.recv_reply()

    def closed(self):
        try:
            return self.s.recv(1) == b""
        except OSError:
            return True

    def close(self):
        self.s.close()


@pytest.fixture
def smtpd_factory():
    started = []

    def start(**params):
        d = Smtpd({k: str(v) for k, v in params.items()})
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def smtpd(smtpd_factory):
    return smtpd_factory()


def session(d, helo=b"EHLO client.test\r\n"):
    r = d.raw()
    assert r.recv_reply().startswith(b"220 ")
    assert r.cmd(helo).startswith(b"250")
    return r


def wait_files(d, n, timeout=3):
    end = time.time() + timeout
    while time.time() < end and len(d.queue_files()) < n:
        time.sleep(0.05)
    return d.queue_files()


# ---------------------------------------------------------------- basics

def test_greeting_and_ehlo_keywords(smtpd):
    r = smtpd.raw()
    assert r.recv_reply() == b"220 mx.test ESMTP postino\r\n"
    rep = r.cmd(b"EHLO client.test\r\n").decode()
    lines = [l[4:] for l in rep.split("\r\n") if l]
    assert lines[0] == HOST
    for kw in ["PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]:
        assert kw in lines
    assert "STARTTLS" not in lines
    assert r.cmd(b"HELO client.test\r\n") == b"250 mx.test\r\n"
    assert r.cmd(b"NOOP\r\n").startswith(b"250 2.0.0")
    assert r.cmd(b"VRFY bob\r\n").startswith(b"252 2.0.0")
    assert r.cmd(b"HELP\r\n").startswith(b"214 2.0.0")
    assert r.cmd(b"EXPN list\r\n").startswith(b"502 5.5.1")
    assert r.cmd(b"ETRN x\r\n").startswith(b"502 5.5.1")
    assert r.cmd(b"FOO\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
    assert r.cmd(b"RCPT TO:<a@example.org>\r\n").startswith(b"503 5.5.1")
    assert r.cmd(b"DATA\r\n").startswith(b"503 5.5.1")
    assert r.cmd(b"MAIL FROM:a@b.c\r\n").startswith(b"501 5.1.7")
    assert r.cmd(b"MAIL FROM<a@b.c>\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"QUIT\r\n").startswith(b"221 2.0.0")
    assert r.closed()
    log = smtpd.logtext()
    assert "connect from unknown[127.0.0.1]" in log
    assert re.search(r"disconnect from unknown\[127\.0\.0\.1\] helo=1 ehlo=1 mail=0/2 rcpt=0/1 "
                     r"data=0/1 noop=1 vrfy=1 expn=0/1 etrn=0/1 help=1 quit=1 unknown=0/1 "
                     r"commands=6/13\n", log)


def test_smtplib_delivery_writes_queue_file(smtpd):
    c = smtpd.smtp()
    c.ehlo("client.test")
    msg = b"From: a@b.c\r\nMessage-ID: <m1@b.c>\r\nSubject: hi\r\n\r\nHello\r\n..dot\r\n"
    c.sendmail("a@b.c", ["x@example.org"], msg,
               mail_options=["RET=HDRS", "ENVID=ab+2Bcd", "BODY=8BITMIME", "SIZE=100"],
               rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x+40example.org"])
    c.quit()
    files = wait_files(smtpd, 1)
    assert len(files) == 1
    path = files[0]
    qid = os.path.basename(path)
    assert os.stat(path).st_mode & 0o777 == 0o700
    env = smtpd.envelope(path)
    assert "sender=a@b.c\n" in env
    assert "rcpt=x@example.org\n" in env
    assert "envid=ab+cd\n" in env
    assert "ret=HDRS\n" in env
    assert "orcpt=rfc822;x+40example.org\n" in env
    assert "notify=SUCCESS,FAILURE\n" in env or "notify=FAILURE,SUCCESS\n" in env
    assert "helo=client.test\n" in env
    assert "proto=ESMTP\n" in env
    body = smtpd.content(path)
    assert body.startswith(b"Received: from client.test (unknown [127.0.0.1])\r\n\tby mx.test (postino) with ESMTP id " + qid.encode() + b"\r\n\tfor <x@example.org>; ")
    # smtplib stuffed "..dot" to "...dot"; smtpd unstuffs it back
    assert body.endswith(b"\r\n\r\nHello\r\n..dot\r\n")
    log = smtpd.logtext()
    assert "%s: client=unknown[127.0.0.1]" % qid in log
    assert "%s: message-id=<m1@b.c>" % qid in log


def test_pipelining_batched(smtpd):
    r = smtpd.raw()
    r.recv_reply()
    r.send(b"EHLO c.test\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@example.org>\r\n"
           b"RCPT TO:<y@example.org>\r\nDATA\r\n")
    assert r.recv_reply().startswith(b"250-mx.test")
    assert r.recv_reply().startswith(b"250 2.1.0")
    assert r.recv_reply().startswith(b"250 2.1.5")
    assert r.recv_reply().startswith(b"250 2.1.5")
    assert r.recv_reply().startswith(b"354 ")
    r.send(b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<z@example.org>\r\nDATA\r\n"
           b"x\r\n.\r\nQUIT\r\n")
    assert re.match(rb"250 2\.0\.0 Ok: queued as [0-9A-F]+\r\n", r.recv_reply())
    assert r.recv_reply().startswith(b"250 2.1.0")
    assert r.recv_reply().startswith(b"250 2.1.5")
    assert r.recv_reply().startswith(b"354 ")
    assert r.recv_reply().startswith(b"250 2.0.0 Ok: queued as")
    assert r.recv_reply().startswith(b"221")
    files = wait_files(smtpd, 2)
    assert len(files) == 2
    contents = sorted(smtpd.content(f) for f in files)
    # two recipients: no "for" clause
    assert any(b"\tfor <" not in c and c.endswith(b"body\r\n") for c in contents)
    assert any(c.endswith(b"\r\n\tfor <z@example.org>; " + c.split(b"; ", 1)[1].split(b"\r\n")[0] + b"\r\nx\r\n") for c in contents)


# ---------------------------------------------------------------- limits

def test_size_limit_at_mail(smtpd_factory):
    d = smtpd_factory(message_size_limit=1000)
    r = session(d)
    assert b"250-SIZE 1000\r\n" in r.cmd(b"EHLO c\r\n")
    assert r.cmd(b"MAIL FROM:<a@b.c> SIZE=1001\r\n") == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.c> SIZE=x\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"MAIL FROM:<a@b.c> SIZE=1000\r\n").startswith(b"250 2.1.0")


def test_size_limit_after_data_leaves_no_file(smtpd_factory):
    d = smtpd_factory(message_size_limit=1000)
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    r.send((b"x" * 70 + b"\r\n") * 100)
    assert r.cmd(b".\r\n") == b"552 5.3.4 Error: message file too big\r\n"
    assert d.queue_files() == []
    # session still usable
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd(b"small\r\n.\r\n").startswith(b"250 2.0.0")
    assert len(wait_files(d, 1)) == 1


def test_recipient_limit(smtpd_factory):
    d = smtpd_factory(smtpd_recipient_limit=3)
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.c>\r\n")
    for i in range(3):
        assert r.cmd(b"RCPT TO:<u%d@example.org>\r\n" % i).startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<u9@example.org>\r\n") == b"452 4.5.3 Error: too many recipients\r\n"


def test_command_line_too_long(smtpd):
    r = session(smtpd)
    assert r.cmd(b"NOOP " + b"x" * 5000 + b"\r\n") == b"500 5.5.2 Error: line too long\r\n"
    assert r.cmd(b"NOOP " + b"x" * 100000 + b"\r\n") == b"500 5.5.2 Error: line too long\r\n"
    assert r.cmd(b"NOOP\r\n").startswith(b"250")


def test_nul_in_command(smtpd):
    r = session(smtpd)
    assert r.cmd(b"NO\x00OP\r\n").startswith(b"500 5.5.2")
    assert r.cmd(b"MAIL FROM:<a\x00@b.c>\r\n").startswith(b"500 5.5.2")
    # a bare CR inside a command must not reach the Received: header
    assert r.cmd(b"HELO a\rX-Injected: 1\r\n").startswith(b"500 5.5.2")
    assert r.cmd(b"NOOP\r\n").startswith(b"250")


def test_hard_error_limit(smtpd_factory):
    d = smtpd_factory(smtpd_hard_error_limit=3)
    r = session(d)
    assert r.cmd(b"BAD1\r\n").startswith(b"500")
    assert r.cmd(b"BAD2\r\n").startswith(b"500")
    rep = r.cmd(b"BAD3\r\n")
    assert rep.startswith(b"500")
    assert r.recv_reply() == b"421 4.7.0 mx.test Error: too many errors\r\n"
    assert r.closed()


def test_soft_error_limit_delays_replies(smtpd_factory):
    d = smtpd_factory(smtpd_soft_error_limit=1, smtpd_error_sleep_time="1s")
    r = session(d)
    t0 = time.time()
    assert r.cmd(b"BAD1\r\n").startswith(b"500")
    assert time.time() - t0 < 0.5
    t0 = time.time()
    r.send(b"BAD2\r\nNOOP\r\n")
    assert r.recv_reply().startswith(b"500")
    assert time.time() - t0 >= 0.9
    assert r.recv_reply().startswith(b"250")


def test_idle_timeout(smtpd_factory):
    d = smtpd_factory(smtpd_timeout="1s")
    r = session(d)
    r.s.settimeout(5)
    assert r.recv_reply() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
    assert r.closed()
    assert "timeout after EHLO from unknown[127.0.0.1]" in d.logtext()


def test_connection_limit(smtpd_factory):
    d = smtpd_factory(smtpd_client_connection_limit=2)
    a = session(d)
    b = session(d)
    c = d.raw()
    assert c.recv_reply().startswith(b"421 4.7.0")
    a.close()
    b.close()


def test_lost_connection_in_data_removes_file(smtpd):
    r = session(smtpd)
    r.cmd(b"MAIL FROM:<a@b.c>\r\n")
    r.cmd(b"RCPT TO:<x@example.org>\r\n")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    r.send(b"Subject: half\r\n\r\npartial")
    time.sleep(0.2)
    assert len(smtpd.queue_files()) == 1  # being written
    r.close()
    end = time.time() + 3
    while time.time() < end and smtpd.queue_files():
        time.sleep(0.05)
    assert smtpd.queue_files() == []
    assert "lost connection after DATA from unknown[127.0.0.1]" in smtpd.logtext()


# ---------------------------------------------------------------- parameters

def test_mail_rcpt_parameters(smtpd):
    r = session(smtpd)
    assert r.cmd(b"MAIL FROM:<a@b.c> FOO=1\r\n").startswith(b"555 5.5.4")
    assert r.cmd(b"MAIL FROM:<a@b.c> BODY=9BIT\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"MAIL FROM:<a@b.c> RET=NONE\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"MAIL FROM:<a@b.c> ENVID=bad+zz\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"MAIL FROM:<a@b.c> AUTH=<> BODY=7BIT\r\n").startswith(b"250 2.1.0")
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"503 5.5.1")
    assert r.cmd(b"RCPT TO:<x@example.org> NOTIFY=NEVER,SUCCESS\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"RCPT TO:<x@example.org> NOTIFY=BOGUS\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"RCPT TO:<x@example.org> ORCPT=rfc822\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"RCPT TO:<x@example.org> ORCPT=rfc822;a+ZZ\r\n").startswith(b"501 5.5.4")
    assert r.cmd(b"RCPT TO:<x@example.org> XYZ=1\r\n").startswith(b"555 5.5.4")
    assert r.cmd(b"RCPT TO:<x@example.org> NOTIFY=NEVER\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<postmaster>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:x@example.org\r\n").startswith(b"501 5.1.3")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd(b"hi\r\n.\r\n").startswith(b"250 2.0.0")
    env = smtpd.envelope(wait_files(smtpd, 1)[0])
    assert "rcpt=postmaster@mx.test\n" in env
    assert "notify=NEVER\n" in env


def test_bare_postmaster_gets_myorigin(smtpd_factory):
    """RCPT TO:<postmaster> is qualified with $myorigin, as Postfix does."""
    d = smtpd_factory(myorigin="example.org")
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<Postmaster>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd(b"hi\r\n.\r\n").startswith(b"250 2.0.0")
    env = d.envelope(wait_files(d, 1)[0])
    assert "rcpt=Postmaster@example.org\n" in env, env


# ---------------------------------------------------------------- relay control

def test_relay_denied_for_outsider(smtpd_factory):
    d = smtpd_factory(mynetworks="10.0.0.0/8, [2001:db8::]/32", mydestination="example.org",
                      relay_domains=".relay.test")
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<x@EXAMPLE.ORG>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<x@sub.relay.test>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<x@relay.test>\r\n").startswith(b"554 5.7.1")
    assert r.cmd(b"RCPT TO:<x@other.com>\r\n") == b"554 5.7.1 <x@other.com>: Relay access denied\r\n"
    assert r.cmd(b"RCPT TO:<x@sub.example.org>\r\n").startswith(b"554 5.7.1")
    log = d.logtext()
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <x@other.com>: "
            "Relay access denied; from=<a@b.c> to=<x@other.com> proto=ESMTP helo=<client.test>") in log


@pytest.mark.parametrize("rcpt", [
    b"<x%other.com@example.org>",
    b"<other.com!x@example.org>",
    b"<\"x@other.com\"@example.org>",
    b"<@example.org:x@example.org>",
])
def test_address_tricks_refused(smtpd_factory, rcpt):
    d = smtpd_factory(mynetworks="10.0.0.0/8", mydestination="example.org")
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.c>\r\n")
    rep = r.cmd(b"RCPT TO:" + rcpt + b"\r\n")
    assert rep.startswith(b"550 5.7.1") or rep.startswith(b"501"), rep


def test_mynetworks_may_relay(smtpd):
    r = session(smtpd)
    r.cmd(b"MAIL FROM:<a@b.c>\r\n")
    assert r.cmd(b"RCPT TO:<x@other.com>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<x%y@other.com>\r\n").startswith(b"250 2.1.5")


# ---------------------------------------------------------------- DATA parsing

def data_session(d):
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    return r


SMUGGLE = [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("mark", SMUGGLE)
def test_smuggling_never_ends_data(smtpd, mark):
    r = data_session(smtpd)
    r.send(b"Subject: s\r\n\r\nfirst" + mark +
           b"MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n")
    rep = r.cmd(b".\r\n")
    assert rep.startswith(b"250 2.0.0"), rep
    assert r.cmd(b"QUIT\r\n").startswith(b"221")
    files = wait_files(smtpd, 1)
    time.sleep(0.2)
    files = smtpd.queue_files()
    assert len(files) == 1
    body = smtpd.content(files[0])
    assert b"MAIL FROM:<evil@x.y>" in body and b"smuggled" in body
    # normalised: no bare CR or LF remains in the stored content
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", body) is None


def test_dot_unstuffing_and_first_line_dot(smtpd):
    r = data_session(smtpd)
    assert r.cmd(b"..a\r\n...\r\n.b\r\nend\r\n.\r\n").startswith(b"250 2.0.0")
    body = smtpd.content(wait_files(smtpd, 1)[0])
    assert body.split(b"\r\n", 3)[3] == b".a\r\n..\r\nb\r\nend\r\n" or body.endswith(b"\r\n.a\r\n..\r\nb\r\nend\r\n")


def test_empty_message(smtpd):
    r = data_session(smtpd)
    assert r.cmd(b".\r\n").startswith(b"250 2.0.0")
    body = smtpd.content(wait_files(smtpd, 1)[0])
    assert body.startswith(b"Received:") and body.endswith(b"\r\n")


def test_bare_lf_normalize(smtpd):
    r = data_session(smtpd)
    assert r.cmd(b"Subject: x\n\nline1\nline2\r\n.\r\n").startswith(b"250 2.0.0")
    body = smtpd.content(wait_files(smtpd, 1)[0])
    assert body.endswith(b"Subject: x\r\n\r\nline1\r\nline2\r\n")


def test_bare_lf_reject(smtpd_factory):
    d = smtpd_factory(smtpd_forbid_bare_newline="reject", mynetworks="10.0.0.0/8",
                      smtpd_forbid_bare_newline_exclusions="")
    r = data_session(d)
    assert r.cmd(b"Subject: x\r\n\r\nline1\nline2\r\n.\r\n") == b"550 5.5.2 Error: bare <LF> received\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd(b"a\rb\r\n.\r\n") == b"550 5.5.2 Error: bare <CR> received\r\n"
    assert d.queue_files() == []


def test_bare_lf_keep(smtpd_factory):
    d = smtpd_factory(smtpd_forbid_bare_newline="no")
    r = data_session(d)
    assert r.cmd(b"a\nb\n.\nc\r\n.\r\n").startswith(b"250 2.0.0")
    body = d.content(wait_files(d, 1)[0])
    # kept as sent: after a bare LF the dot is content, not a stuffing dot
    assert body.endswith(b"\r\na\nb\n.\nc\r\n")


def test_long_lines_split(smtpd_factory):
    d = smtpd_factory(line_length_limit=1000)
    r = data_session(d)
    assert r.cmd(b"Subject: l\r\n\r\n" + b"y" * 2500 + b"\r\n.\r\n").startswith(b"250 2.0.0")
    body = d.content(wait_files(d, 1)[0])
    tail = body.split(b"\r\n\r\n", 1)[1]
    assert tail == b"y" * 1000 + b"\r\n" + b"y" * 1000 + b"\r\n" + b"y" * 500 + b"\r\n"


@pytest.mark.parametrize("mode", ["normalize", "no"])
def test_nul_in_data_stripped(smtpd_factory, mode):
    d = smtpd_factory(smtpd_forbid_bare_newline=mode)
    r = data_session(d)
    # a NUL is a content byte for the end-of-data mark: "\r\n\0.\r\n" is
    # not the end, and the stored line is "." (dot-stuffed when relayed)
    assert r.cmd(b"a\x00b\xff\r\n\x00.\r\n\x00\x00\r\nz\r\n.\r\n").startswith(b"250 2.0.0")
    body = d.content(wait_files(d, 1)[0])
    assert body.endswith(b"\r\nab\xff\r\n.\r\n\r\nz\r\n") and b"\x00" not in body


def test_nul_in_data_reject(smtpd_factory):
    d = smtpd_factory(smtpd_forbid_bare_newline="reject", mynetworks="10.0.0.0/8",
                      smtpd_forbid_bare_newline_exclusions="")
    r = data_session(d)
    assert r.cmd(b"Subject: n\r\n\r\na\x00b\r\n.\r\n") == b"550 5.6.0 Error: NUL byte received\r\n"
    assert re.search(r": reject: NUL byte received from unknown\[127\.0\.0\.1\]", d.logtext())
    # the session goes on; a clean message is accepted
    assert r.cmd(b"MAIL FROM:<a@b.c>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd(b"Subject: n\r\n\r\nab\r\n.\r\n").startswith(b"250 2.0.0")
    assert len(wait_files(d, 1)) == 1


@pytest.mark.parametrize("piece", [0, 7])
def test_header_scan_split_independent(smtpd_factory, piece):
    """A header line whose ':' lies past byte 1000, then more hops than
    hopcount_limit: refused whether the client sends it in one write or in
    7-byte pieces (the split must not decide what counts, issue 7 item 9)."""
    d = smtpd_factory(hopcount_limit=2)
    r = data_session(d)
    r.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = (b"Subject: s\r\n" + b"X" * 1001 + b": v\r\n" +
           b"Received: a\r\nReceived: b\r\nDelivered-To: c@example.org\r\n"
           b"\r\nbody\r\n.\r\n")
    if piece:
        for i in range(0, len(msg), piece):
            r.send(msg[i:i + piece])
            time.sleep(0.002)
    else:
        r.send(msg)
    assert r.recv_reply() == b"554 5.4.0 Error: too many hops\r\n"
    assert d.queue_files() == []


def test_large_message_streams(smtpd):
    r = data_session(smtpd)
    chunk = (b"z" * 998 + b"\r\n") * 1000
    for _ in range(5):
        r.send(chunk)
    assert r.cmd(b".\r\n").startswith(b"250 2.0.0")
    body = smtpd.content(wait_files(smtpd, 1)[0])
    assert body.endswith(chunk) and len(body) > 5 * len(chunk)


def test_swaks(smtpd):
    if not shutil.which("swaks"):
        pytest.skip("swaks not installed")
    out = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(smtpd.port),
                          "--from", "a@b.c", "--to", "x@example.org", "--pipeline"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(wait_files(smtpd, 1)) == 1


# ---------------------------------------------------------------- qmgr notification

class QmgrListener:
    """Stands where qmgr's private/qmgr socket would be and collects records."""

    def __init__(self, spool):
        os.makedirs(os.path.join(spool, "private"), exist_ok=True)
        self.path = os.path.join(spool, "private", "qmgr")
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.s = socket.socket(socket.AF_UNIX)
        self.s.bind(self.path)
        self.s.listen(8)
        self.s.settimeout(10)
        self.conn = None
        self.buf = b""

    def record(self):
        if self.conn is None:
            self.conn, _ = self.s.accept()
            self.conn.settimeout(10)
        while b"\n\n" not in self.buf:
            d = self.conn.recv(4096)
            if not d:
                raise EOFError
            self.buf += d
        rec, self.buf = self.buf.split(b"\n\n", 1)
        return dict(l.split(b"=", 1) for l in rec.split(b"\n"))

    def close(self):
        if self.conn:
            self.conn.close()
        self.s.close()
        os.unlink(self.path)


def send_one(d):
    r = data_session(d)
    rep = r.cmd(b"Subject: n\r\n\r\nx\r\n.\r\n")
    r.cmd(b"QUIT\r\n")
    m = re.match(rb"250 2\.0\.0 Ok: queued as ([0-9A-F]+)\r\n", rep)
    assert m, rep
    return m.group(1)


def test_qmgr_notified_and_reconnects(smtpd):
    q = QmgrListener(smtpd.spool)
    qid = send_one(smtpd)
    assert q.record() == {b"proto": b"1", b"request": b"new", b"queue_id": qid}
    # qmgr restarts: the next notification goes to the new instance
    q.close()
    time.sleep(0.2)
    q = QmgrListener(smtpd.spool)
    ids = {send_one(smtpd), send_one(smtpd)}
    got = set()
    end = time.time() + 10
    while got != ids and time.time() < end:
        rec = q.record()
        assert rec[b"proto"] == b"1" and rec[b"request"] == b"new"
        got.add(rec[b"queue_id"])
    assert got >= ids
    q.close()


def test_qmgr_absent_then_started(smtpd):
    qid = send_one(smtpd)  # no qmgr: mail is still accepted
    q = QmgrListener(smtpd.spool)
    assert q.record()[b"queue_id"] == qid  # delivered by the retry timer
    q.close()
