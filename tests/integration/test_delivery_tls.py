"""STARTTLS in the delivery agent (issue #3, client side): the security
levels none/may/encrypt/verify, smtp_tls_policy_maps per destination, the
tls= field in the delivery log line, and the discarding of bytes a server
sends behind its 220 to STARTTLS. Real peers only: aiosmtpd receivers with
STARTTLS, certificates made with the openssl CLI, dnsmasq for the MX names.

Receivers (all on one port P = smtp_port, different loopback addresses):
  127.0.0.6  mx.example.test  STARTTLS, certificate signed by the test CA
             (also mx.other.test: the same server under a name it lacks)
  127.0.0.7  mx.plain.test    no STARTTLS
  127.0.0.8  mx.self.test     STARTTLS, self-signed certificate
  127.0.0.9  mx.junk.test     raw server: "220 go ahead" + injected bytes
  127.0.0.10 mx.badtls.test   raw server: "220 go ahead", then no TLS at all
"""
import asyncio
import os
import re
import shutil
import ssl
import subprocess
import time

import pytest

import postino_harness as h

SENDER = "s@sender.test"
TLS_IP, PLAIN_IP, SELF_IP, JUNK_IP = "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9"
BADTLS_IP = "127.0.0.10"

pytestmark = pytest.mark.dns([
    ("mx", "tlsdest.test", "mx.example.test", 10), ("a", "mx.example.test", TLS_IP),
    ("mx", "plain.test", "mx.plain.test", 10), ("a", "mx.plain.test", PLAIN_IP),
    ("mx", "selfsigned.test", "mx.self.test", 10), ("a", "mx.self.test", SELF_IP),
    ("mx", "junk.test", "mx.junk.test", 10), ("a", "mx.junk.test", JUNK_IP),
    ("mx", "wrongname.test", "mx.other.test", 10), ("a", "mx.other.test", TLS_IP),
    ("mx", "badtls.test", "mx.badtls.test", 10), ("a", "mx.badtls.test", BADTLS_IP),
])


# ---------------------------------------------------------------- certificates

def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def certs():
    """A CA, mx.example.test signed by it, and a self-signed mx.self.test."""
    d = h.make_tmpdir("postino-tls-")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=Postino Test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "mx.key", "-out", "mx.csr",
             "-subj", "/CN=mx.example.test", cwd=d)
    with open(os.path.join(d, "mx.ext"), "w") as f:
        f.write("subjectAltName=DNS:mx.example.test\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "mx.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "mx.crt", "-days", "2", "-extfile", "mx.ext", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key",
             "-out", "self.crt", "-days", "2", "-subj", "/CN=mx.self.test",
             "-addext", "subjectAltName=DNS:mx.self.test", cwd=d)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    yield {k: os.path.join(d, k) for k in os.listdir(d)}
    shutil.rmtree(d, ignore_errors=True)


def _server_ctx(crt, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    return ctx


# ---------------------------------------------------------------- receivers

class _TLSHandler(h._Handler):
    """The harness handler, plus: was this message received under TLS?"""

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        with self.sink.lock:
            self.sink.tls_seen.append((self.ip, envelope.rcpt_tos[:], bool(session.ssl)))
        return reply


class TLSSink(h.Sink):
    """aiosmtpd receivers; ips maps ip -> server SSLContext (STARTTLS) or None."""

    def __init__(self, ips):
        super().__init__(list(ips))
        self.tls = dict(ips)
        self.tls_seen = []

    def start(self, ips=None):
        from aiosmtpd.controller import Controller
        for ip in (ips or self.ips):
            c = Controller(_TLSHandler(self, ip), hostname=ip, port=self.port, ready_timeout=5,
                           decode_data=False, server_hostname="tls-%s.test" % ip,
                           data_size_limit=0, tls_context=self.tls[ip])
            c.start()
            self.controllers[ip] = c
        return self

    def tls_for(self, rcpt):
        with self.lock:
            return [t for ip, rcpts, t in self.tls_seen if rcpt in rcpts]


class JunkServer(h.AsyncServers):
    """A raw SMTP server whose 220 to STARTTLS is followed, in the same
    write, by bytes that look like replies. They must be thrown away by
    the client; the dialogue then goes on under TLS. With badtls=True the
    "handshake" gets plaintext garbage instead: a TLS failure."""

    INJECTED = b"250-PIPELINING\r\n250 injected\r\n"

    def __init__(self, ip, port, ctx, badtls=False):
        super().__init__(port, {ip: (ip, None)})
        self.ip, self.ctx, self.badtls = ip, ctx, badtls
        self.stall = False      # badtls: say 220, then nothing at all
        self.received = []      # (tls, commands) per finished message

    async def session(self, key, script, reader, writer):
        tls, cmds = False, []
        writer.write(b"220 mx.junk.test ESMTP\r\n")
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                cmds.append(("tls " if tls else "") + cmd)
                verb = cmd.split(" ")[0].upper()
                if verb == "EHLO":
                    writer.write(b"250-mx.junk.test\r\n" +
                                 (b"" if tls else b"250-STARTTLS\r\n") + b"250 8BITMIME\r\n")
                elif verb == "STARTTLS" and self.badtls:
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    await asyncio.sleep(30 if self.stall else 0.2)
                    writer.write(b"this is not TLS\r\n" * 20)
                    await writer.drain()
                    return
                elif verb == "STARTTLS":
                    writer.write(b"220 go ahead\r\n" + self.INJECTED)
                    await writer.drain()
                    await writer.start_tls(self.ctx)
                    tls = True
                elif verb == "DATA":
                    writer.write(b"354 go\r\n")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    self.received.append((tls, list(cmds)))
                    writer.write(b"250 2.0.0 Ok: junk test\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return
        finally:
            writer.close()


@pytest.fixture
def receivers(certs):
    """(sink, junk server, port): every receiver of this module, one port."""
    port = h.free_port_all([TLS_IP, PLAIN_IP, SELF_IP, JUNK_IP, BADTLS_IP])
    sink = TLSSink({TLS_IP: _server_ctx(certs["mx.crt"], certs["mx.key"]),
                    PLAIN_IP: None,
                    SELF_IP: _server_ctx(certs["self.crt"], certs["self.key"])})
    sink.port = port
    sink.start()
    junk = JunkServer(JUNK_IP, port, _server_ctx(certs["mx.crt"], certs["mx.key"])).start()
    junk.bad = JunkServer(BADTLS_IP, port, None, badtls=True).start()
    yield sink, junk, port
    junk.bad.stop()
    junk.stop()
    sink.stop()


def _tls_postino(postino_factory, port, start=True, **main):
    cfg = {"smtp_port": str(port), "smtp_helo_timeout": "5s", "smtp_starttls_timeout": "5s"}
    cfg.update({k: str(v) for k, v in main.items()})
    return postino_factory(main=cfg, start=start)


def _to_line(p, rcpt, status, timeout=30):
    return p.wait_log(r"postino/smtp\[\d+\]: [0-9A-F]+: to=<%s>, .*status=%s"
                      % (re.escape(rcpt), status), timeout=timeout)[0]


TLS_FIELD = re.compile(r", tls=(TLSv1\.[23]):([A-Z0-9_-]+)(, site=\S+)?$")


# ---------------------------------------------------------------- tests

def test_may_uses_starttls_and_logs_it(postino_factory, receivers):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port)          # default level: may
    qid = p.send(SENDER, "a@tlsdest.test")
    sink.wait_to("a@tlsdest.test")
    assert sink.tls_for("a@tlsdest.test") == [True], "the message must travel under TLS"
    line = _to_line(p, "a@tlsdest.test", "sent")
    m = TLS_FIELD.search(line)
    assert m, "no tls= field at the end of %r" % line
    assert "relay=mx.example.test[%s]:%d" % (TLS_IP, port) in line
    est = p.wait_log(r"Untrusted TLS connection established to mx\.example\.test\[%s\]:%d: "
                     r"%s with cipher %s " % (re.escape(TLS_IP), port, m.group(1), m.group(2)))
    assert est
    p.wait_removed(qid)
    # pflogsumm still counts the delivery with the tls= field in the line.
    r = subprocess.run(["/usr/sbin/pflogsumm", "--syslog-name=postino", p.maillog],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s*1\s+delivered\b", r.stdout, re.M), r.stdout


def test_may_to_plaintext_server_delivers(postino_factory, receivers):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port)
    qid = p.send(SENDER, "b@plain.test")
    sink.wait_to("b@plain.test")
    assert sink.tls_for("b@plain.test") == [False]
    line = _to_line(p, "b@plain.test", "sent")
    assert "tls=" not in line, line
    p.wait_removed(qid)


def test_encrypt_without_starttls_defers(postino_factory, receivers):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port, smtp_tls_security_level="encrypt")
    p.send(SENDER, "c@plain.test")
    line = _to_line(p, "c@plain.test", "deferred")
    assert "dsn=4.7.4" in line, line
    assert "(TLS is required, but was not offered by host mx.plain.test[%s])" % PLAIN_IP in line
    assert not sink.to("c@plain.test"), "must not be sent in plaintext"
    # encrypt does not check the certificate: the self-signed host is fine.
    qid = p.send(SENDER, "c2@selfsigned.test")
    sink.wait_to("c2@selfsigned.test")
    assert sink.tls_for("c2@selfsigned.test") == [True]
    assert TLS_FIELD.search(_to_line(p, "c2@selfsigned.test", "sent"))
    p.wait_removed(qid)


def test_verify_with_ca_delivers(postino_factory, receivers, certs):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port, smtp_tls_security_level="verify",
                     smtp_tls_CAfile=certs["ca.crt"])
    qid = p.send(SENDER, "d@tlsdest.test")
    sink.wait_to("d@tlsdest.test")
    assert sink.tls_for("d@tlsdest.test") == [True]
    p.wait_log(r"Verified TLS connection established to mx\.example\.test\[%s\]:%d: TLSv1\.[23] "
               r"with cipher" % (re.escape(TLS_IP), port))
    assert TLS_FIELD.search(_to_line(p, "d@tlsdest.test", "sent"))
    p.wait_removed(qid)


def test_verify_self_signed_defers(postino_factory, receivers, certs):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port, smtp_tls_security_level="verify",
                     smtp_tls_CAfile=certs["ca.crt"])
    p.send(SENDER, "e@selfsigned.test")
    line = _to_line(p, "e@selfsigned.test", "deferred")
    assert "dsn=4.7.5" in line, line
    assert "Server certificate not trusted" in line, line
    assert "self-signed certificate" in line, line
    assert not sink.to("e@selfsigned.test")
    # A certificate from the trusted CA, but not for this MX name.
    p.send(SENDER, "e2@wrongname.test")
    line = _to_line(p, "e2@wrongname.test", "deferred")
    assert "dsn=4.7.5" in line and "Server certificate not verified" in line, line
    assert "name mismatch" in line and "expected mx.other.test" in line, line
    assert not sink.to("e2@wrongname.test")


def test_policy_maps_override_default(postino_factory, receivers, certs):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port, start=False, smtp_tls_CAfile=certs["ca.crt"])
    pfile = os.path.join(p.conf, "tls_policy")
    with open(pfile, "w") as f:
        f.write("plain.test encrypt\n"
                "selfsigned.test none\n"
                "tlsdest.test verify\n")
    p.cli("map", "build", pfile, check=True)
    p.set(smtp_tls_policy_maps="hash:" + pfile)
    p.start()
    # encrypt for plain.test: deferred although the default (may) would send.
    p.send(SENDER, "f1@plain.test")
    line = _to_line(p, "f1@plain.test", "deferred")
    assert "dsn=4.7.4" in line and "not offered" in line, line
    # none for selfsigned.test: plaintext although STARTTLS is offered.
    q2 = p.send(SENDER, "f2@selfsigned.test")
    sink.wait_to("f2@selfsigned.test")
    assert sink.tls_for("f2@selfsigned.test") == [False]
    assert "tls=" not in _to_line(p, "f2@selfsigned.test", "sent")
    # verify for tlsdest.test: verified.
    q3 = p.send(SENDER, "f3@tlsdest.test")
    sink.wait_to("f3@tlsdest.test")
    p.wait_log(r"Verified TLS connection established to mx\.example\.test")
    p.wait_removed(q2)
    p.wait_removed(q3)


def test_verify_does_not_reuse_weaker_connection(postino_factory, receivers, certs):
    """Same destination, two levels: the cached "may" connection to
    selfsigned.test must not carry a "verify" message for it."""
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port, start=False, smtp_tls_CAfile=certs["ca.crt"],
                     smtp_connection_cache_time_limit="30s")
    pfile = os.path.join(p.conf, "tls_policy")
    with open(pfile, "w") as f:
        f.write("selfsigned.test may\n")
    p.cli("map", "build", pfile, check=True)
    p.set(smtp_tls_policy_maps="hash:" + pfile)
    p.start()
    q1 = p.send(SENDER, "g1@selfsigned.test")
    sink.wait_to("g1@selfsigned.test")
    p.wait_removed(q1)
    # Switch the table to verify while the may connection sits in the cache.
    with open(pfile, "w") as f:
        f.write("selfsigned.test verify\n")
    p.cli("map", "build", pfile, check=True)
    time.sleep(1.5)  # dict.c looks for a rebuilt table at most once a second
    p.send(SENDER, "g2@selfsigned.test")
    line = _to_line(p, "g2@selfsigned.test", "deferred")
    assert "dsn=4.7.5" in line and "Server certificate not trusted" in line, line
    assert not sink.to("g2@selfsigned.test")


def test_bytes_after_starttls_220_are_discarded(postino_factory, receivers):
    sink, junk, port = receivers
    p = _tls_postino(postino_factory, port)
    qid = p.send(SENDER, "h@junk.test")
    line = _to_line(p, "h@junk.test", "sent")
    assert TLS_FIELD.search(line), "delivery must go on under TLS: %r" % line
    p.wait_log(r"discarding %d byte\(s\) that mx\.junk\.test\[%s\]:%d sent after its reply to "
               r"STARTTLS" % (len(JunkServer.INJECTED), re.escape(JUNK_IP), port))
    assert len(junk.received) == 1
    tls, cmds = junk.received[0]
    assert tls
    # After TLS the client said EHLO again (it did not take the injected
    # "250" for the answer to a command it had not sent).
    assert [c.split(" ")[0] for c in cmds][:6] == ["EHLO", "STARTTLS", "tls", "tls", "tls", "tls"]
    assert cmds[2].startswith("tls EHLO"), cmds
    p.wait_removed(qid)


def test_may_handshake_failure_retries_in_plaintext(postino_factory, receivers):
    sink, junk, port = receivers
    p = _tls_postino(postino_factory, port)
    qid = p.send(SENDER, "i@badtls.test")
    line = _to_line(p, "i@badtls.test", "sent")
    assert "tls=" not in line, line
    p.wait_log(r"SSL_connect error to mx\.badtls\.test\[%s\]:%d" % (re.escape(BADTLS_IP), port))
    p.wait_log(r"retrying without TLS")
    assert len(junk.bad.received) == 1
    tls, cmds = junk.bad.received[0]
    assert not tls and "STARTTLS" not in cmds, cmds
    p.wait_removed(qid)


def test_encrypt_handshake_failure_defers(postino_factory, receivers):
    sink, junk, port = receivers
    p = _tls_postino(postino_factory, port, smtp_tls_security_level="encrypt")
    p.send(SENDER, "j@badtls.test")
    line = _to_line(p, "j@badtls.test", "deferred")
    assert "dsn=4.7.5" in line and "Cannot start TLS: handshake failure" in line, line
    assert not junk.bad.received


def test_handshake_timeout(postino_factory, receivers):
    """A server that says 220 to STARTTLS and then nothing: the handshake
    times out after smtp_starttls_timeout; at may level the same host is
    tried again in plaintext."""
    sink, junk, port = receivers
    junk.bad.stall = True
    p = _tls_postino(postino_factory, port, smtp_starttls_timeout="1s")
    qid = p.send(SENDER, "k@badtls.test")
    line = _to_line(p, "k@badtls.test", "sent")
    assert "tls=" not in line
    p.wait_log(r"SSL_connect error to mx\.badtls\.test\[%s\]:%d: timed out" % (re.escape(BADTLS_IP), port))
    p.wait_removed(qid)


def test_tls_connection_is_reused(postino_factory, receivers):
    sink, _, port = receivers
    p = _tls_postino(postino_factory, port, start=False, smtp_connection_cache_time_limit="30s")
    # One delivery process, so the second job finds the first one's connection.
    p.master_cf = lambda: "\n".join(
        ["127.0.0.1:%d inet n - n - 1 smtpd" % p.port, "qmgr unix - - n 300 1 qmgr",
         "smtp unix - - n - 1 delivery", "bounce unix - - n - 1 bounce"]) + "\n"
    p.write_config()
    p.start()
    for n in (1, 2):
        qid = p.send(SENDER, "r%d@tlsdest.test" % n)
        sink.wait_to("r%d@tlsdest.test" % n)
        assert TLS_FIELD.search(_to_line(p, "r%d@tlsdest.test" % n, "sent"))
        p.wait_removed(qid)
    assert sink.tls_for("r2@tlsdest.test") == [True]
    assert len(p.log_lines(r"TLS connection established to mx\.example\.test")) == 1, \
        "the second message must reuse the cached TLS connection"


def test_tls_details_in_the_delivery_event(postino_factory, receivers, workdir):
    """The delivery event (issue #11) carries what tls= says: the
    protocol version and the cipher, as separate fields."""
    import json
    sink, _, port = receivers
    log = os.path.join(h.mail_owner_dir(os.path.join(workdir, "log")), "events.json")
    p = postino_factory(main={"smtp_port": str(port), "event_log": log},
                        master_extra=["events unix - - n - 1 events"])
    qid = p.send(SENDER, "ev@tlsdest.test")
    m = TLS_FIELD.search(_to_line(p, "ev@tlsdest.test", "sent"))

    def delivery():
        try:
            with open(log) as f:
                evs = [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return None
        return [e for e in evs if e["type"] == "delivery" and e["queue_id"] == qid]
    ev = h.wait_until(delivery, what="the delivery event")[0]
    assert (ev["tls_version"], ev["tls_cipher"]) == (m.group(1), m.group(2))
    assert (ev["remote_host"], ev["remote_ip"]) == ("mx.example.test", TLS_IP)
