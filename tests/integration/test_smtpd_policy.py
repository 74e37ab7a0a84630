"""The front door (issue #3), smtpd side: restriction lists, STARTTLS and
wrapper mode, SMTP AUTH, per-client limits.

smtpd runs alone (as in test_smtpd_protocol.py) on a random loopback port
with its own temp spool; real peers are used throughout: dnsmasq for the
DNS restrictions, OpenSSL-generated certificates with Python's ssl module,
`openssl s_client` and swaks, a Cyrus sasldb built with saslpasswd2, and
the anvil daemon for the per-client limits. The client is always
127.0.0.1, so tests that need an "outsider" move mynetworks elsewhere.
"""
import base64
import glob
import hashlib
import hmac
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

import postino_harness as h
from test_smtpd_protocol import Raw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTINO_BIN", os.path.join(ROOT, "bin"))
SMTPD = os.path.join(BIN, "smtpd")
POSTINO = os.path.join(BIN, "postino")
ANVIL = os.path.join(BIN, "anvil")
HOST = "mx.test"
OUTSIDE = "10.0.0.0/8"   # mynetworks that does not contain the test client
PASSWORD = "s3cret pw"


class Front:
    """bin/smtpd started by hand; params go to main.cf, opts to -o."""

    def __init__(self, params, opts=None, wrapper=False, expect_start=True, anvil=False):
        self.dir = h.make_tmpdir("front-test-")
        self.spool = os.path.join(self.dir, "spool")
        self.log = os.path.join(self.dir, "maillog")
        os.makedirs(self.spool)
        self.procs = []
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
            "smtpd_sasl_failure_delay": "0",
        }
        conf.update(params)
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        args = []
        for k, v in (opts or {}).items():
            args += ["-o", "%s=%s" % (k, v)]
        self.wrapper = wrapper
        if anvil:
            self.start_anvil()
        self.proc = self.spawn(SMTPD, "smtpd", args)
        if expect_start:
            self.wait_ready()

    def spawn(self, prog, name, args=(), listen=True):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(256)
        self.port = lsock.getsockname()[1]
        fd = lsock.fileno()

        def child_setup():
            if fd == 3:
                os.set_inheritable(3, True)
            else:
                os.dup2(fd, 3)  # the new descriptor is inheritable

        self.stderr_path = os.path.join(self.dir, "stderr-" + name)
        with open(self.stderr_path, "wb") as err:
            p = subprocess.Popen([prog, "-c", self.dir, "-n", name, "-t", "inet", "-s", "1"]
                                 + list(args), preexec_fn=child_setup, close_fds=False,
                                 stderr=err)
        lsock.close()
        self.procs.append(p)
        return p

    def start_anvil(self):
        """The anvil service on spool/private/anvil, as master would run it."""
        priv = os.path.join(self.spool, "private")
        os.makedirs(priv, exist_ok=True)
        path = os.path.join(priv, "anvil")
        usock = socket.socket(socket.AF_UNIX)
        usock.bind(path)
        usock.listen(64)
        fd = usock.fileno()

        def child_setup():
            if fd == 3:
                os.set_inheritable(3, True)
            else:
                os.dup2(fd, 3)  # the new descriptor is inheritable

        with open(os.path.join(self.dir, "stderr-anvil"), "wb") as err:
            p = subprocess.Popen([ANVIL, "-c", self.dir, "-n", "anvil", "-t", "unix", "-s", "1"],
                                 preexec_fn=child_setup, close_fds=False, stderr=err)
        usock.close()
        self.procs.append(p)
        time.sleep(0.1)
        return p

    def wait_ready(self):
        if self.wrapper:
            r = self.tls_raw()
        else:
            r = self.raw()
        assert r.recv_reply().startswith(b"220 ")
        r.close()

    def raw(self, timeout=10):
        return Raw(self.port, timeout)

    def tls_raw(self, timeout=10):
        """Wrapper mode: TLS from the first byte."""
        r = Raw(self.port, timeout)
        r.s = client_ctx().wrap_socket(r.s)
        return r

    def queue_files(self):
        return sorted(glob.glob(os.path.join(self.spool, "queue", "*", "*")))

    def envelope(self, path):
        data = open(path, "rb").read()
        m = re.match(rb"POSTINOQ1 c=(\d+) l=(\d+)\n", data)
        return data[40:int(m.group(1))].decode()

    def content(self, path):
        data = open(path, "rb").read()
        m = re.match(rb"POSTINOQ1 c=(\d+) l=(\d+)\n", data)
        off, ln = int(m.group(1)), int(m.group(2))
        return data[off:off + ln]

    def logtext(self):
        time.sleep(0.1)
        try:
            return open(self.log).read()
        except FileNotFoundError:
            return ""

    def stderr(self):
        return open(self.stderr_path, "rb").read().decode(errors="replace")

    def map(self, name, text):
        """A hash: table built with `postino map build` like postmap."""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")  # a tool here, not under test
        out = subprocess.run([POSTINO, "-c", self.dir, "map", "build", path],
                             capture_output=True, text=True, timeout=30, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        return "hash:" + path

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        err = ""
        for f in glob.glob(os.path.join(self.dir, "stderr-*")):
            err += open(f, "rb").read().decode(errors="replace")
        shutil.rmtree(self.dir, ignore_errors=True)
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert "panic:" not in err, err


@pytest.fixture
def front():
    started = []

    def start(opts=None, wrapper=False, expect_start=True, anvil=False, **params):
        d = Front({k: str(v) for k, v in params.items()}, opts, wrapper, expect_start, anvil)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def session(d, helo=b"EHLO client.test\r\n"):
    r = d.raw()
    assert r.recv_reply().startswith(b"220 ")
    assert r.cmd(helo).startswith(b"250")
    return r


def served(d, tls=False, sender=b"ok@ok.test"):
    """A well-behaved client gets its message queued right now."""
    r = d.raw()
    assert r.recv_reply().startswith(b"220 ")
    assert r.cmd(b"EHLO ok.test\r\n").startswith(b"250")
    if tls:
        starttls(r)
        assert r.cmd(b"EHLO ok.test\r\n").startswith(b"250")
    assert r.cmd(b"MAIL FROM:<" + sender + b">\r\n").startswith(b"250"), "MAIL"
    assert r.cmd(b"RCPT TO:<ok@example.org>\r\n").startswith(b"250"), "RCPT"
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    rep = r.cmd(b"Subject: fine\r\n\r\nfine\r\n.\r\n")
    assert rep.startswith(b"250 2.0.0 Ok: queued as"), rep
    r.cmd(b"QUIT\r\n")
    r.close()
    return rep


# ---------------------------------------------------------------- TLS material

@pytest.fixture(scope="session")
def cert():
    d = tempfile.mkdtemp(prefix="front-cert-")
    os.chmod(d, 0o755)
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=" + HOST,
                    "-addext", "subjectAltName=DNS:" + HOST],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)
    yield {"smtpd_tls_cert_file": crt, "smtpd_tls_key_file": key}
    shutil.rmtree(d, ignore_errors=True)


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def starttls(r):
    rep = r.cmd(b"STARTTLS\r\n")
    assert rep == b"220 2.0.0 Ready to start TLS\r\n", rep
    assert r.buf == b""
    r.s = client_ctx().wrap_socket(r.s)
    return r


@pytest.fixture(scope="session")
def sasldb():
    """A Cyrus sasldb with user/PASSWORD and other/PASSWORD, and an smtpd.conf
    pointing at it; cyrus_sasl_config_path is the directory."""
    if not shutil.which("saslpasswd2"):
        pytest.skip("saslpasswd2 (sasl2-bin) not installed")
    d = tempfile.mkdtemp(prefix="front-sasl-")
    os.chmod(d, 0o755)
    db = os.path.join(d, "sasldb2")
    for user in ("user", "other"):
        subprocess.run(["saslpasswd2", "-c", "-p", "-f", db, "-u", HOST, user],
                       input=PASSWORD.encode(), check=True, timeout=30)
    os.chmod(db, 0o644)
    with open(os.path.join(d, "smtpd.conf"), "w") as f:
        f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\n"
                "mech_list: PLAIN LOGIN CRAM-MD5\n" % db)
    yield {"cyrus_sasl_config_path": d, "smtpd_sasl_auth_enable": "yes"}
    shutil.rmtree(d, ignore_errors=True)


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s)


def plain(user, pw=PASSWORD):
    return b64("\0%s\0%s" % (user, pw))


# ================================================================ restrictions

def test_relay_restrictions_default_and_defer(front):
    d = front(mynetworks=OUTSIDE)
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<x@other.test>\r\n") == \
        b"554 5.7.1 <x@other.test>: Relay access denied\r\n"
    log = d.logtext()
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <x@other.test>: "
            "Relay access denied; from=<a@b.test> to=<x@other.test> proto=ESMTP "
            "helo=<client.test>") in log
    d2 = front(mynetworks=OUTSIDE, smtpd_relay_restrictions="defer_unauth_destination")
    r = session(d2)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@other.test>\r\n") == \
        b"450 4.7.1 <x@other.test>: Relay access denied\r\n"
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")


@pytest.mark.parametrize("rcpt", [
    b"<x%other.test@example.org>", b"<other.test!x@example.org>",
    b"<\"x@other.test\"@example.org>", b"<@example.org:x@other.test>",
    b"<x@other.test@example.org>",
])
def test_address_tricks_never_relayed(front, rcpt):
    d = front(mynetworks=OUTSIDE)
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    rep = r.cmd(b"RCPT TO:" + rcpt + b"\r\n")
    assert rep.startswith(b"550 5.7.1") or rep.startswith(b"501") or \
        rep.startswith(b"554 5.7.1"), rep
    assert served(d)


def test_permit_mynetworks_and_list_order(front):
    # the first permit ends the list: reject after it is never reached
    d = front(smtpd_relay_restrictions="permit_mynetworks, reject")
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n").startswith(b"250")
    d2 = front(smtpd_relay_restrictions="reject, permit_mynetworks")
    r = session(d2)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n") == \
        b"554 5.7.1 <x@far.test>: Recipient address rejected: Access denied\r\n"
    # a permit in one list does not skip the next list
    d3 = front(smtpd_relay_restrictions="permit", smtpd_recipient_restrictions="defer")
    r = session(d3)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n") == \
        b"450 4.7.1 <x@far.test>: Recipient address rejected: Try again later\r\n"


def test_client_access(front):
    d0 = front()
    t = d0.map("client", "127.0.0.1 REJECT go away\n")
    d = front(mynetworks=OUTSIDE, smtpd_client_restrictions="check_client_access " + t)
    r = session(d)  # delay_reject=yes: nothing before RCPT
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n") == \
        b"554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: go away\r\n"
    # shorter address prefixes are looked up too
    t = d0.map("client2", "127.0 DEFER slow down\n")
    d = front(mynetworks=OUTSIDE, smtpd_client_restrictions="check_client_access " + t)
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n") == \
        b"450 4.7.1 <unknown[127.0.0.1]>: Client host rejected: slow down\r\n"


SENDER_MAP = """\
spammer@bad.test   REJECT
bad2.test          DEFER come back later
parent.test        550 5.7.0 no parents here
friend@            OK
dunno@bad3.test    DUNNO
bad3.test          REJECT all of bad3
<>                 REJECT no bounces
odd.test           frobnicate
"""


@pytest.mark.parametrize("sender,reply", [
    (b"spammer@bad.test", b"554 5.7.1 <spammer@bad.test>: Sender address rejected: Access denied"),
    (b"x@bad2.test", b"450 4.7.1 <x@bad2.test>: Sender address rejected: come back later"),
    (b"x@sub.parent.test", b"550 5.7.0 <x@sub.parent.test>: Sender address rejected: no parents here"),
    (b"friend@bad.test", b"250 2.1.5 Ok"),
    (b"dunno@bad3.test", b"250 2.1.5 Ok"),
    (b"x@bad3.test", b"554 5.7.1 <x@bad3.test>: Sender address rejected: all of bad3"),
    (b"", b"554 5.7.1 <>: Sender address rejected: no bounces"),
    (b"x@odd.test", b"451 4.3.5 Server configuration error"),
    (b"x@fine.test", b"250 2.1.5 Ok"),
])
def test_sender_access(front, sender, reply):
    d0 = front()
    t = d0.map("sender", SENDER_MAP)
    d = front(smtpd_sender_restrictions="check_sender_access " + t)
    r = session(d)
    assert r.cmd(b"MAIL FROM:<" + sender + b">\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n") == reply + b"\r\n"


def test_recipient_access_and_warn_if_reject(front):
    d0 = front()
    t = d0.map("rcpt", "blocked@example.org 550 5.1.1 no such user\n"
                       "vip@far.test OK\n")
    d = front(mynetworks=OUTSIDE,
              smtpd_relay_restrictions="check_recipient_access %s, reject_unauth_destination" % t,
              smtpd_recipient_restrictions="warn_if_reject reject_non_fqdn_recipient, "
                                           "check_recipient_access " + t)
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<blocked@example.org>\r\n") == \
        b"550 5.1.1 <blocked@example.org>: Recipient address rejected: no such user\r\n"
    assert r.cmd(b"RCPT TO:<vip@far.test>\r\n").startswith(b"250")  # OK permits relaying
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n").startswith(b"554 5.7.1")
    assert r.cmd(b"RCPT TO:<postmaster>\r\n").startswith(b"250")  # qualified by us
    log = d.logtext()
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <blocked@example.org>" in log


def test_non_fqdn(front):
    d = front(smtpd_helo_restrictions="reject_non_fqdn_helo_hostname",
              smtpd_sender_restrictions="reject_non_fqdn_sender",
              smtpd_recipient_restrictions="reject_non_fqdn_recipient")
    r = session(d, b"EHLO client.test\r\n")
    r.cmd(b"MAIL FROM:<a@nodot>\r\n")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n") == \
        b"504 5.5.2 <a@nodot>: Sender address rejected: need fully-qualified address\r\n"
    r.cmd(b"RSET\r\n")
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    r = session(d, b"EHLO shorty\r\n")
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n") == \
        b"504 5.5.2 <shorty>: Helo command rejected: need fully-qualified hostname\r\n"
    d2 = front(smtpd_relay_restrictions="permit_mynetworks",
               smtpd_recipient_restrictions="reject_non_fqdn_recipient")
    r = session(d2)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@nodot>\r\n") == \
        b"504 5.5.2 <x@nodot>: Recipient address rejected: need fully-qualified address\r\n"


def test_delay_reject_no(front):
    d0 = front()
    t = d0.map("sender", "bad@b.test REJECT\n")
    d = front(smtpd_delay_reject="no", smtpd_sender_restrictions="check_sender_access " + t,
              smtpd_helo_restrictions="reject_non_fqdn_helo_hostname")
    r = d.raw()
    r.recv_reply()
    assert r.cmd(b"EHLO shorty\r\n").startswith(b"504 5.5.2 <shorty>: Helo command rejected")
    assert r.cmd(b"EHLO client.test\r\n").startswith(b"250")
    assert r.cmd(b"MAIL FROM:<bad@b.test>\r\n") == \
        b"554 5.7.1 <bad@b.test>: Sender address rejected: Access denied\r\n"
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"503")
    assert r.cmd(b"MAIL FROM:<good@b.test>\r\n").startswith(b"250")
    assert "NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 554 5.7.1 <bad@b.test>" in d.logtext()


def test_delay_reject_no_client_rejected_at_connect(front):
    """smtpd_delay_reject=no: a client refused by smtpd_client_restrictions
    is told at once, as Postfix does it: the restriction's reply (its own
    text) takes the place of the 220 greeting, every later command but
    QUIT gets "503 5.7.0 Error: access denied", and the log has Postfix's
    "NOQUEUE: reject: CONNECT from" line."""
    d0 = front()
    t = d0.map("client", "127.0.0.1 REJECT go away, spammer\n")
    d = front(expect_start=False, mynetworks=OUTSIDE, smtpd_delay_reject="no",
              smtpd_client_restrictions="check_client_access " + t)
    r = d.raw()
    assert r.recv_reply() == \
        b"554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: go away, spammer\r\n"
    assert r.cmd(b"EHLO client.test\r\n") == \
        b"503 5.7.0 Error: access denied for unknown[127.0.0.1]\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"503 5.7.0")
    assert r.cmd(b"NOOP\r\n").startswith(b"503 5.7.0")
    assert r.cmd(b"QUIT\r\n").startswith(b"221")
    assert r.closed()
    r.close()
    time.sleep(0.2)
    log = d.logtext()
    assert ("NOQUEUE: reject: CONNECT from unknown[127.0.0.1]: 554 5.7.1 <unknown[127.0.0.1]>: "
            "Client host rejected: go away, spammer; proto=SMTP\n") in log, log
    assert "from=<" not in log.split("CONNECT from", 1)[1].split("\n", 1)[0]
    assert log.count("NOQUEUE: reject:") == 1, log  # logged once, not per command
    # a temporary verdict is passed on as it is; "reject" alone gives the default text
    t2 = d0.map("client2", "127.0.0.1 DEFER busy\n")
    d2 = front(expect_start=False, mynetworks=OUTSIDE, smtpd_delay_reject="no",
               smtpd_client_restrictions="check_client_access " + t2)
    r = d2.raw()
    assert r.recv_reply() == b"450 4.7.1 <unknown[127.0.0.1]>: Client host rejected: busy\r\n"
    r.close()
    d3 = front(expect_start=False, smtpd_delay_reject="no", smtpd_client_restrictions="reject")
    r = d3.raw()
    assert r.recv_reply() == \
        b"554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied\r\n"
    assert r.cmd(b"QUIT\r\n").startswith(b"221")
    r.close()
    # a permitted client is greeted as usual and served
    d4 = front(smtpd_delay_reject="no", smtpd_client_restrictions="permit_mynetworks, reject")
    served(d4)


def test_unknown_restriction_is_fatal(front):
    d = front(expect_start=False, smtpd_recipient_restrictions="permit_mynetworks, reject_evil")
    assert d.proc.wait(10) != 0
    err = d.stderr() + d.logtext()
    assert "smtpd_recipient_restrictions" in err and "reject_evil" in err, err
    d2 = front(expect_start=False, smtpd_sender_restrictions="check_sender_access")
    assert d2.proc.wait(10) != 0
    assert "needs a table" in d2.stderr() + d2.logtext()


@pytest.fixture
def dnsd():
    w = h.make_tmpdir("front-dns-")
    srv = h.DnsServer(w, [("mx", "good.test", "mx.good.test", 10), ("a", "mx.good.test", "127.0.0.9"),
                          ("a", "aonly.test", "127.0.0.8"), ("nullmx", "nomail.test")]).start()
    yield srv
    srv.stop()
    shutil.rmtree(w, ignore_errors=True)


def test_unknown_sender_and_recipient_domain(front, dnsd):
    d = front(dns_servers="127.0.0.1:%d" % dnsd.port, smtpd_relay_restrictions="permit",
              smtpd_sender_restrictions="reject_unknown_sender_domain",
              smtpd_recipient_restrictions="reject_unknown_recipient_domain")
    r = session(d)
    cases = [
        (b"a@good.test", b"x@good.test", b"250 2.1.5 Ok"),
        (b"a@aonly.test", b"x@aonly.test", b"250 2.1.5 Ok"),
        (b"a@nx.test", b"x@good.test",
         b"550 5.1.8 <a@nx.test>: Sender address rejected: Domain not found"),
        (b"a@good.test", b"x@nx.test",
         b"550 5.1.2 <x@nx.test>: Recipient address rejected: Domain not found"),
        (b"a@nomail.test", b"x@good.test",
         b"550 5.7.27 <a@nomail.test>: Sender address rejected: Domain nomail.test does not "
         b"accept mail (nullMX)"),
        (b"a@good.test", b"x@nomail.test",
         b"556 5.1.10 <x@nomail.test>: Recipient address rejected: Domain nomail.test does not "
         b"accept mail (nullMX)"),
        # dnsmasq refuses names outside its zone: a temporary failure
        (b"a@elsewhere.example", b"x@good.test",
         b"450 4.1.8 <a@elsewhere.example>: Sender address rejected: Domain not found"),
        (b"", b"x@example.org", b"250 2.1.5 Ok"),
    ]
    for snd, rcpt, want in cases:
        assert r.cmd(b"MAIL FROM:<" + snd + b">\r\n").startswith(b"250")
        assert r.cmd(b"RCPT TO:<" + rcpt + b">\r\n") == want + b"\r\n", (snd, rcpt)
        assert r.cmd(b"RSET\r\n").startswith(b"250")
    # pipelined: the session waits for each lookup and answers in order
    r.send(b"MAIL FROM:<b@good.test>\r\nRCPT TO:<y@nx.test>\r\nRCPT TO:<y@aonly.test>\r\n"
           b"RCPT TO:<z@nomail.test>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    assert r.recv_reply().startswith(b"250 2.1.0")
    assert r.recv_reply().startswith(b"550 5.1.2 <y@nx.test>")
    assert r.recv_reply().startswith(b"250 2.1.5")
    assert r.recv_reply().startswith(b"556 5.1.10 <z@nomail.test>")
    assert r.recv_reply().startswith(b"354")
    assert r.recv_reply().startswith(b"250 2.0.0 Ok: queued as")
    assert r.recv_reply().startswith(b"250 2.0.0")
    # a client that leaves during a lookup does no harm
    r2 = session(d)
    r2.send(b"MAIL FROM:<q@elsewhere2.example>\r\nRCPT TO:<x@good.test>\r\n")
    r2.close()
    time.sleep(0.3)
    assert served(d, sender=b"ok@good.test")


# ================================================================ TLS

def client_hello():
    """The bytes of a real TLS ClientHello (Python's ssl over memory BIOs)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(inc, out)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def test_starttls_session(front, cert):
    d = front(smtpd_tls_security_level="may", smtpd_tls_received_header="yes", **cert)
    r = d.raw()
    r.recv_reply()
    assert b"250-STARTTLS\r\n" in r.cmd(b"EHLO client.test\r\n")
    starttls(r)
    assert r.s.version() in ("TLSv1.2", "TLSv1.3")
    ehlo = r.cmd(b"EHLO client.test\r\n")
    assert b"STARTTLS" not in ehlo and ehlo.startswith(b"250-mx.test")
    assert r.cmd(b"STARTTLS\r\n").startswith(b"503 5.5.1")
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd(b"Subject: t\r\n\r\nsecret\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued")
    assert r.cmd(b"QUIT\r\n").startswith(b"221")
    path = d.queue_files()[0]
    assert "proto=ESMTPS\n" in d.envelope(path)
    body = d.content(path)
    assert b" with ESMTPS id " in body
    assert re.search(rb"\r\n\t\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)\r\n", body), body
    log = d.logtext()
    assert re.search(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: "
                     r"TLSv1\.[23] with cipher ", log), log


def test_starttls_discards_pipelined_plaintext(front, cert):
    """CVE-2011-0411: nothing sent with STARTTLS may be run inside TLS, and
    the SMTP state starts over."""
    d = front(smtpd_tls_security_level="may", **cert)
    r = d.raw()
    r.recv_reply()
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"MAIL FROM:<before@b.test>\r\n").startswith(b"250")
    r.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@b.test>\r\n")
    assert r.recv_reply() == b"220 2.0.0 Ready to start TLS\r\n"
    time.sleep(0.2)
    assert r.buf == b""
    r.s = client_ctx().wrap_socket(r.s)
    # the first reply inside TLS answers our NOOP, not the injected commands
    assert r.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    # MAIL from before the handshake is forgotten, HELO too
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"503 5.5.1")
    assert r.cmd(b"EHLO client.test\r\n").startswith(b"250")
    assert r.cmd(b"MAIL FROM:<after@b.test>\r\n").startswith(b"250")
    r.s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        r.line()  # no stray replies
    r.s.settimeout(10)
    assert r.cmd(b"QUIT\r\n").startswith(b"221")


def test_encrypt_level_requires_starttls(front, cert):
    d = front(smtpd_tls_security_level="encrypt", **cert)
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n") == \
        b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    starttls(r)
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    assert served(d, tls=True)


def test_tls_without_certificate_is_fatal_for_encrypt(front):
    d = front(expect_start=False, smtpd_tls_security_level="encrypt")
    assert d.proc.wait(10) != 0
    assert "smtpd_tls_cert_file" in d.stderr() + d.logtext()


def test_openssl_s_client_starttls(front, cert):
    d = front(smtpd_tls_security_level="may", **cert)
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % d.port,
                          "-starttls", "smtp", "-quiet", "-ign_eof"],
                         input=b"EHLO sclient.test\r\nQUIT\r\n", capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert "250-mx.test" in text and "221 2.0.0" in text, text + out.stderr.decode()


def test_swaks_tls_and_wrapper(front, cert):
    if not shutil.which("swaks"):
        pytest.skip("swaks not installed")
    d = front(smtpd_tls_security_level="may", **cert)
    out = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(d.port), "--tls",
                          "--from", "a@b.test", "--to", "x@example.org"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    w = front(opts={"smtpd_tls_wrappermode": "yes"}, wrapper=True, **cert)
    out = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(w.port), "--tlsc",
                          "--from", "a@b.test", "--to", "x@example.org"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(w.queue_files()) == 1
    assert "proto=ESMTPS\n" in w.envelope(w.queue_files()[0])
    # wrapper mode: no STARTTLS on offer, TLS already there
    r = w.tls_raw()
    r.recv_reply()
    assert b"STARTTLS" not in r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"STARTTLS\r\n").startswith(b"503 5.5.1")
    # a plaintext client on the wrapper port gets nowhere and does no harm
    p = w.raw(timeout=5)
    p.send(b"EHLO plain.test\r\n")
    assert p.closed()


def test_client_hello_on_plaintext_port(front):
    d = front()
    r = d.raw()
    r.recv_reply()
    r.send(client_hello())
    rep = r.recv_reply()
    assert rep.startswith(b"500 5.5.2"), rep
    assert served(d)


def test_starttls_handshake_timeout(front, cert):
    d = front(smtpd_tls_security_level="may", smtpd_starttls_timeout="1s", **cert)
    r = session(d)
    assert r.cmd(b"STARTTLS\r\n").startswith(b"220 2.0.0")
    t0 = time.time()
    assert r.closed()
    assert time.time() - t0 < 5
    # garbage instead of a ClientHello: the handshake fails, the process lives
    r = session(d)
    r.cmd(b"STARTTLS\r\n")
    r.send(b"this is not TLS at all\r\n" * 20)
    assert r.closed()
    assert "SSL_accept error from unknown[127.0.0.1]" in d.logtext()
    assert served(d, tls=True)


# ================================================================ AUTH

def auth_front(front, cert, sasldb, **kw):
    params = dict(cert)
    params.update(sasldb)
    params.setdefault("smtpd_tls_security_level", "may")
    params.update(kw)
    return front(**params)


def tls_session(d):
    r = d.raw()
    r.recv_reply()
    r.cmd(b"EHLO client.test\r\n")
    starttls(r)
    return r


def test_auth_plain_success_after_tls(front, cert, sasldb):
    d = auth_front(front, cert, sasldb, smtpd_relay_restrictions="permit_sasl_authenticated, reject",
                   mynetworks=OUTSIDE)
    r = d.raw()
    r.recv_reply()
    assert b"AUTH" not in r.cmd(b"EHLO client.test\r\n")  # smtpd_tls_auth_only=yes
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"503 5.5.1")
    starttls(r)
    ehlo = r.cmd(b"EHLO client.test\r\n").decode()
    m = re.search(r"250-AUTH ([A-Z0-9 -]+)\r\n", ehlo)
    assert m and "PLAIN" in m.group(1).split() and "LOGIN" in m.group(1).split(), ehlo
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n").startswith(b"554 5.7.1")  # not yet
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n") == \
        b"503 5.5.1 Error: MAIL transaction in progress\r\n"
    r.cmd(b"RSET\r\n")
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n") == \
        b"235 2.7.0 Authentication successful\r\n"
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n") == \
        b"503 5.5.1 Error: already authenticated\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.test> AUTH=<>\r\n").startswith(b"250")
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n").startswith(b"250")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    rep = r.cmd(b"Subject: a\r\n\r\nauthenticated\r\n.\r\n")
    qid = re.match(rb"250 2\.0\.0 Ok: queued as (\w+)", rep).group(1).decode()
    env = d.envelope(d.queue_files()[0])
    assert "sasl_method=PLAIN\n" in env
    assert re.search(r"sasl_username=user(@mx\.test)?\n", env), env
    assert "proto=ESMTPSA\n" in env
    assert b" with ESMTPSA id " in d.content(d.queue_files()[0])
    assert re.search(r"%s: client=unknown\[127\.0\.0\.1\], sasl_method=PLAIN, "
                     r"sasl_username=user" % qid, d.logtext())


def test_auth_login_and_plain_without_initial_response(front, cert, sasldb):
    d = auth_front(front, cert, sasldb)
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert r.cmd(b64("user") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert r.cmd(b64(PASSWORD) + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert r.cmd(plain("other") + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    # LOGIN with the user name as initial response
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"AUTH LOGIN " + b64("user") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert r.cmd(b64(PASSWORD) + b"\r\n").startswith(b"235")


def test_auth_cram_md5(front, cert, sasldb):
    d = auth_front(front, cert, sasldb)
    r = tls_session(d)
    ehlo = r.cmd(b"EHLO client.test\r\n")
    if b"CRAM-MD5" not in ehlo:
        pytest.skip("CRAM-MD5 plugin not installed")
    rep = r.cmd(b"AUTH CRAM-MD5\r\n")
    assert rep.startswith(b"334 ")
    challenge = base64.b64decode(rep[4:].strip())
    digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
    assert r.cmd(b64("user " + digest) + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"


def test_auth_failure_delayed_not_blocking(front, cert, sasldb):
    d = auth_front(front, cert, sasldb, smtpd_sasl_failure_delay="2s")
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    r.send(b"AUTH PLAIN " + plain("user", "wrong") + b"\r\n")
    t0 = time.time()
    assert served(d)  # meanwhile another client is served at once
    assert time.time() - t0 < 1.5
    rep = r.recv_reply()
    assert time.time() - t0 >= 1.5
    assert rep.startswith(b"535 5.7.8 Error: authentication failed: "), rep
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"235")
    assert re.search(r"warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication failed: ",
                     d.logtext())


@pytest.mark.parametrize("exchange", [
    [(b"AUTH PLAIN !!!notbase64\r\n", b"501 5.5.2 Cannot decode response")],
    [(b"AUTH PLAIN\r\n", b"334 "), (b"*\r\n", b"501 5.7.0 Authentication aborted")],
    [(b"AUTH LOGIN\r\n", b"334 "), (b"%%%\r\n", b"501 5.5.2")],
    [(b"AUTH\r\n", b"501 5.5.4")],
    [(b"AUTH NOSUCHMECH\r\n", b"504 5.5.4 Unsupported authentication mechanism")],
    [(b"AUTH PLAIN\r\n", b"334 "), (b"A" * 20000 + b"\r\n", b"500 5.5.6")],
    [(b"AUTH PLAIN " + base64.b64encode(b"\0user\0" + b"x" * 3000) + b"\r\n", b"5")],
    [(b"AUTH PLAIN =\r\n", b"535 5.7.8")],
    [(b"AUTH PLAIN " + b64("no nul bytes") + b"\r\n", b"5")],
])
def test_auth_malformed(front, cert, sasldb, exchange):
    d = auth_front(front, cert, sasldb)
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    for send, want in exchange:
        rep = r.cmd(send)
        assert rep.startswith(want), (send[:60], rep)
    # the session is usable afterwards: a good AUTH works
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"235")
    assert served(d, tls=True)


def test_auth_not_enabled_and_plaintext_allowed(front, cert, sasldb):
    d = front()
    r = session(d)
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"503 5.5.1")
    d2 = auth_front(front, cert, sasldb, smtpd_tls_auth_only="no")
    r = session(d2)
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"235")


def test_sender_login_mismatch(front, cert, sasldb):
    d0 = front()
    t = d0.map("logins", "user@b.test user\nshared@b.test other, user\n@owned.test other\n")
    d = auth_front(front, cert, sasldb, smtpd_sender_login_maps=t,
                   smtpd_sender_restrictions="reject_sender_login_mismatch")
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"235")
    for snd, ok in [(b"user@b.test", True), (b"shared@b.test", True), (b"x@owned.test", False),
                    (b"nobody@b.test", False), (b"", True)]:
        r.cmd(b"MAIL FROM:<" + snd + b">\r\n")
        rep = r.cmd(b"RCPT TO:<x@example.org>\r\n")
        if ok:
            assert rep.startswith(b"250"), (snd, rep)
        else:
            assert re.match(rb"553 5\.7\.1 <%s>: Sender address rejected: not owned by user "
                            rb"user(@mx\.test)?\r\n" % re.escape(snd), rep), rep
        r.cmd(b"RSET\r\n")
    # not logged in: addresses somebody owns are refused, others pass
    r = session(d)
    r.cmd(b"MAIL FROM:<x@owned.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n") == \
        b"553 5.7.1 <x@owned.test>: Sender address rejected: not logged in\r\n"
    r.cmd(b"RSET\r\n")
    r.cmd(b"MAIL FROM:<free@free.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250")


def test_submission_style(front, cert, sasldb):
    """Port 587 as Postfix ships it: TLS required, AUTH required to relay."""
    params = dict(cert)
    params["cyrus_sasl_config_path"] = sasldb["cyrus_sasl_config_path"]
    d = front(opts={"smtpd_tls_security_level": "encrypt", "smtpd_sasl_auth_enable": "yes",
                    "smtpd_relay_restrictions": "permit_sasl_authenticated,reject"},
              mynetworks=OUTSIDE, **params)
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"530 5.7.0")
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n").startswith(b"530 5.7.0")
    starttls(r)
    r.cmd(b"EHLO client.test\r\n")
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    assert r.cmd(b"RCPT TO:<x@far.test>\r\n").startswith(b"554 5.7.1")
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"554 5.7.1")  # even local: reject
    if shutil.which("swaks"):
        out = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(d.port), "--tls",
                              "--auth", "PLAIN", "--auth-user", "user", "--auth-password",
                              PASSWORD, "--from", "user@b.test", "--to", "x@far.test"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        out = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(d.port), "--tls",
                              "--from", "user@b.test", "--to", "x@far.test"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "554 5.7.1" in out.stdout, out.stdout
        assert len(d.queue_files()) == 1


# ================================================================ limits

def greeting(d):
    r = d.raw()
    return r, r.recv_reply()


@pytest.fixture
def limited(front):
    def make(**kw):
        return front(mynetworks=OUTSIDE, anvil=True, **kw)
    return make


def test_connection_count_limit(limited):
    d = limited(smtpd_client_connection_count_limit=2)
    a, ga = greeting(d)
    b, gb = greeting(d)
    assert ga.startswith(b"220") and gb.startswith(b"220")
    c, gc = greeting(d)
    assert gc == b"421 4.7.0 mx.test Error: too many connections from 127.0.0.1\r\n"
    assert c.closed()
    a.cmd(b"QUIT\r\n")
    a.close()
    time.sleep(0.3)
    e, ge = greeting(d)
    assert ge.startswith(b"220"), ge
    assert "Connection concurrency limit exceeded: 3 from unknown[127.0.0.1] for service smtpd" \
        in d.logtext()


def test_connection_rate_limit(limited):
    d = limited(smtpd_client_connection_rate_limit=3, smtpd_client_connection_count_limit=0)
    # Front's start-up probe was one connection already
    replies = []
    for _ in range(4):
        r, g = greeting(d)
        replies.append(g[:3])
        r.close()
    assert replies == [b"220", b"220", b"421", b"421"], replies


def test_message_and_recipient_rate(limited):
    d = limited(smtpd_client_message_rate_limit=2, smtpd_client_recipient_rate_limit=3)
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    for i in range(3):
        assert r.cmd(b"RCPT TO:<x%d@example.org>\r\n" % i).startswith(b"250")
    assert r.cmd(b"RCPT TO:<y@example.org>\r\n") == \
        b"452 4.5.3 Error: too many recipients from 127.0.0.1\r\n"
    r.cmd(b"RSET\r\n")
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
    r.cmd(b"RSET\r\n")
    assert r.cmd(b"MAIL FROM:<a@b.test>\r\n") == \
        b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"
    # pipelined commands keep their order while anvil is asked
    r2 = session(d)
    r2.send(b"NOOP\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\n")
    assert r2.recv_reply().startswith(b"250 2.0.0")
    assert r2.recv_reply().startswith(b"450 4.7.1")
    assert r2.recv_reply().startswith(b"250 2.0.0")


def test_auth_rate_and_failure_limits(limited, cert, sasldb):
    params = dict(cert)
    params.update(sasldb)
    d = limited(smtpd_tls_security_level="may", smtpd_client_auth_failure_limit=2, **params)
    r = tls_session(d)
    r.cmd(b"EHLO client.test\r\n")
    for _ in range(2):
        assert r.cmd(b"AUTH PLAIN " + plain("user", "bad") + b"\r\n").startswith(b"535 5.7.8")
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n") == \
        b"503 5.7.0 Error: too many AUTH failures from 127.0.0.1\r\n"
    d2 = limited(smtpd_tls_security_level="may", smtpd_client_auth_rate_limit=1, **params)
    r = tls_session(d2)
    r.cmd(b"EHLO client.test\r\n")
    assert r.cmd(b"AUTH PLAIN\r\n").startswith(b"334")
    assert r.cmd(b"*\r\n").startswith(b"501 5.7.0")
    assert r.cmd(b"AUTH PLAIN " + plain("user") + b"\r\n") == \
        b"503 5.7.0 Error: too many AUTH commands from 127.0.0.1\r\n"


def test_limits_exempt_and_fail_open(front):
    # $mynetworks is exempt by default
    d = front(smtpd_client_connection_count_limit=1, smtpd_client_message_rate_limit=1,
              anvil=True)
    a, ga = greeting(d)
    b, gb = greeting(d)
    assert ga.startswith(b"220") and gb.startswith(b"220")
    assert served(d) and served(d)
    # anvil not running: mail still flows
    d2 = front(mynetworks=OUTSIDE, smtpd_client_connection_count_limit=1,
               smtpd_client_message_rate_limit=1)
    t0 = time.time()
    assert served(d2) and served(d2)
    assert time.time() - t0 < 8


def test_header_size_limit(front):
    d = front(header_size_limit=2048)
    r = session(d)
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    r.cmd(b"RCPT TO:<x@example.org>\r\n")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    hdrs = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(60))
    rep = r.cmd(hdrs + b"\r\nbody\r\n.\r\n")
    assert rep == b"552 5.3.4 Message header size exceeds limit\r\n"
    assert d.queue_files() == []
    # a big body under small headers is fine, and the session goes on
    r.cmd(b"MAIL FROM:<a@b.test>\r\n")
    r.cmd(b"RCPT TO:<x@example.org>\r\n")
    r.cmd(b"DATA\r\n")
    assert r.cmd(b"Subject: s\r\n\r\n" + b"z" * 100 + b"\r\n" * 100 + b".\r\n") \
        .startswith(b"250 2.0.0")


def smtpd_rss_kb(d):
    for line in open("/proc/%d/status" % d.proc.pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_trickling_clients_do_not_stop_a_good_one(front):
    d = front(smtpd_timeout="60s")
    idle = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", d.port))
        idle.append(s)
    rss0 = smtpd_rss_kb(d)
    for rnd in range(3):
        for i, s in enumerate(idle):
            # half write a never-ending command line, half a slow command
            s.send(b"X" * 300 if i % 2 else b"EHLO t")
        t0 = time.time()
        assert served(d)
        assert time.time() - t0 < 2
    # a few write a lot without ever ending a line: memory stays bounded
    for s in idle[:20]:
        s.setblocking(False)
        try:
            for _ in range(64):
                s.send(b"Y" * 65536)
        except BlockingIOError:
            pass
    time.sleep(1)
    assert served(d)
    growth = smtpd_rss_kb(d) - rss0
    if "asan" not in BIN:  # ASan's quarantine keeps freed memory on purpose
        assert growth < 64 * 1024, "smtpd grew by %d kB" % growth
    for s in idle:
        s.close()
    time.sleep(0.5)
    assert served(d)
