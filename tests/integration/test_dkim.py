"""DKIM signing at reception (issue 8): messages relayed through postino to
the aiosmtpd sinks must verify with two independent verifiers, dkimpy
(python3-dkim) and OpenDKIM's opendkim-testmsg, against public keys that
"postino dkim keygen" made and a dnsmasq serves as TXT records.

dkimpy is pointed at that dnsmasq (dnspython on its port). opendkim-testmsg
only knows the system resolver, so it runs in a private network and mount
namespace (unshare) where a second dnsmasq with the same records listens
on 127.0.0.1:53 and /etc/resolv.conf is bind-mounted to name it: nothing
outside the test sees either.

Routing: alonea.test is the sink on 127.0.0.4 (made 7-bit by hiding
8BITMIME where a case needs it), example.test the sink on 127.0.0.2.
Signing domains: sign.test (RSA r1 and Ed25519 e1), rsa.test (RSA only),
ed.test (Ed25519 only); other.test has no key."""
import os
import re
import shutil
import smtplib
import subprocess

import dkim
import dns.resolver
import pytest

import postino_harness as h
from test_bdat import Client, bdat
from test_submission import OUTSIDE, PASSWORD, secrets  # noqa: F401 (a fixture)

KEYS = [("sign.test", "r1", "rsa"), ("sign.test", "e1", "ed25519"),
        ("rsa.test", "r2", "rsa"), ("ed.test", "e2", "ed25519")]


@pytest.fixture(scope="module")
def keys(postino_bin):
    """Keys from `postino dkim keygen`, the key table built from its
    output, and a dnsmasq with the TXT records it printed."""
    d = h.make_tmpdir("dkim-keys-")
    conf = os.path.join(d, "conf")
    os.mkdir(conf)
    open(os.path.join(conf, "main.cf"), "w").close()
    open(os.path.join(conf, "master.cf"), "w").close()
    records, lines = [], {}
    for domain, sel, alg in KEYS:
        r = subprocess.run([os.path.join(postino_bin, "postino"), "-c", conf, "dkim", "keygen",
                            "-a", alg, "-d", os.path.join(d, "keys"), domain, sel],
                           capture_output=True, text=True, check=True)
        out = r.stdout.splitlines()
        m = re.match(r'^(\S+) IN TXT ((?:"[^"]*" ?)+)$', out[0])
        assert m, r.stdout
        strings = re.findall(r'"([^"]*)"', m.group(2))
        assert all(len(s) <= 255 for s in strings)
        records.append(("txt", m.group(1), "".join(strings)))
        lines.setdefault(domain, []).append(out[-1].split(None, 1)[1])
        key = os.path.join(d, "keys", "%s.%s.key" % (domain, sel))
        assert os.stat(key).st_mode & 0o777 == 0o600
    table = os.path.join(d, "dkim_keys")
    with open(table, "w") as f:
        for domain, items in lines.items():
            f.write("%s %s\n" % (domain, ", ".join(items)))
    subprocess.run([os.path.join(postino_bin, "postino"), "-c", conf, "map", "build", table],
                   check=True)
    srv = h.DnsServer(d, records).start()
    yield {"dir": d, "table": "hash:" + table, "dns": srv, "records": records}
    srv.stop()
    shutil.rmtree(d, ignore_errors=True)


def signer(postino_factory, keys, start=True, **main):
    p = dict(dkim_key_maps=keys["table"], relay_domains="alonea.test, example.test")
    p.update(main)
    return postino_factory(main=p, start=start)


# ---------------------------------------------------------------- verifiers

def dkimpy_verify(raw, keys, idx=0):
    def dnsfunc(name, timeout=5):
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = keys["dns"].port
        r.lifetime = timeout
        name = name.decode() if isinstance(name, bytes) else name
        try:
            ans = r.resolve(name, "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(rd.strings) for rd in ans)
    try:
        return dkim.DKIM(raw).verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.DKIMException:
        return False


def opendkim_verify(raw, keys):
    """opendkim-testmsg in a private namespace whose resolver is a
    dnsmasq holding the test keys. True when it reports no error."""
    d = keys["dir"]
    with open(os.path.join(d, "resolv.conf"), "w") as f:
        f.write("nameserver 127.0.0.1\n")
    dm = h.DnsServer(d, keys["records"])._args()
    pid = os.path.join(d, "odkim-dnsmasq.pid")
    # without -k, dnsmasq returns once its socket is bound: then it answers
    script = ("ip link set lo up && mount --bind %s/resolv.conf /etc/resolv.conf && "
              "/usr/sbin/dnsmasq -p 53 --listen-address=127.0.0.1 --bind-interfaces "
              "--no-resolv --no-hosts -C /dev/null --user=root --pid-file=%s %s && "
              "/usr/sbin/opendkim-testmsg; rc=$?; kill $(cat %s); exit $rc"
              % (d, pid, " ".join("'%s'" % a for a in dm), pid))
    r = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script], input=raw,
                       capture_output=True, timeout=30)
    return r.returncode == 0 and not r.stdout.strip(), r.stderr.decode(errors="replace")


def signatures(raw):
    hdr = raw.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"^DKIM-Signature:.*?(?=\r\n(?! |\t))", hdr, re.M | re.S)


def tag(sig, name):
    m = re.search(rb"[;\s]" + name.encode() + rb"=([^;]*)", sig)
    return re.sub(rb"\s+", b"", m.group(1)).decode() if m else None


def assert_verifies(raw, keys, n=1):
    sigs = signatures(raw)
    assert len(sigs) >= n, raw[:800]
    for i in range(n):
        assert dkimpy_verify(raw, keys, i), "dkimpy: signature %d fails:\n%r" % (i, raw[:1500])
        assert tag(sigs[i], "l") is None
    ok, err = opendkim_verify(raw, keys)
    assert ok, "opendkim-testmsg: %s\n%r" % (err, raw[:1500])


def message(frm, body=b"Hello from the DKIM tests.\r\n", extra=b"", to=b"u@alonea.test"):
    return (b"From: Sender <%s>\r\nTo: <%s>\r\nSubject: dkim test\r\n"
            b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n"
            b"Message-ID: <%d@dkim.test>\r\n%s\r\n" % (frm, to, id(body), extra)) + body


def relay(p, sink, raw, frm="s@sign.test", rcpt="u@alonea.test", **kw):
    p.send(frm, rcpt, raw=raw, **kw)
    return sink.wait_to(rcpt)[-1]


# ---------------------------------------------------------------- the cases

def test_rsa_and_ed25519_both_verify(postino_factory, keys, sink):
    p = signer(postino_factory, keys)
    m = relay(p, sink, message(b"s@sign.test"))
    sigs = signatures(m.content)
    assert len(sigs) == 2
    assert {tag(s, "a") for s in sigs} == {"rsa-sha256", "ed25519-sha256"}
    for s in sigs:
        assert tag(s, "d") == "sign.test" and tag(s, "c") == "relaxed/relaxed"
        assert tag(s, "t") and tag(s, "x") is None
        assert tag(s, "h").lower().startswith("from:from:to:subject:date:message-id")
    assert_verifies(m.content, keys, n=2)
    assert p.log_lines(r": dkim-signed d=sign\.test s=r1 a=rsa-sha256$")
    assert p.log_lines(r": dkim-signed d=sign\.test s=e1 a=ed25519-sha256$")


@pytest.mark.parametrize("domain,alg", [("rsa.test", "rsa-sha256"), ("ed.test", "ed25519-sha256")])
def test_single_key_domains(postino_factory, keys, sink, domain, alg):
    p = signer(postino_factory, keys, dkim_signature_ttl="1d")
    m = relay(p, sink, message(b"s@" + domain.encode()), frm="s@" + domain)
    sigs = signatures(m.content)
    assert len(sigs) == 1 and tag(sigs[0], "a") == alg
    assert int(tag(sigs[0], "x")) == int(tag(sigs[0], "t")) + 86400
    assert_verifies(m.content, keys)


def test_simple_canonicalization(postino_factory, keys, sink):
    p = signer(postino_factory, keys, dkim_canonicalization="simple/simple")
    body = b"  spaced  line \t\r\n\r\ntrailing blank lines\r\n\r\n\r\n"
    m = relay(p, sink, message(b"s@sign.test", body))
    assert all(tag(s, "c") == "simple/simple" for s in signatures(m.content))
    assert_verifies(m.content, keys, n=2)


def test_dots_long_lines_data_and_bdat(postino_factory, keys, sink):
    """Dot-stuffed lines and 998-byte lines over DATA; the same over BDAT."""
    p = signer(postino_factory, keys)
    body = (b".leading dot\r\n..two dots\r\n.\r\n" + b"x" * 998 + b"\r\n" +
            b"y" * 997 + b" \r\n" + b"end\r\n")
    m = relay(p, sink, message(b"s@sign.test", body))
    assert b"\r\n.leading dot\r\n" in m.content and b"x" * 998 in m.content
    assert_verifies(m.content, keys, n=2)
    raw = message(b"s@sign.test", body, to=b"b@alonea.test")
    c = Client(p.port)
    c.envelope(b"b@alonea.test")
    assert c.cmd(bdat(raw, last=True)).startswith(b"250")
    c.close()
    m = sink.wait_to("b@alonea.test")[-1]
    assert_verifies(m.content, keys, n=2)


@pytest.mark.parametrize("mode", ["normalize", "no"])
def test_lf_only_input(postino_factory, keys, sink, mode):
    """LF-only content is sent (and so signed) with CRLF line ends."""
    p = signer(postino_factory, keys, smtpd_forbid_bare_newline=mode)
    raw = message(b"s@sign.test", b"line one\nline two\n\n.dot\nlast\n").replace(b"\r\n", b"\n")
    c = Client(p.port)
    c.envelope(b"u@alonea.test")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    assert c.cmd(raw + b"\r\n.\r\n").startswith(b"250")
    c.close()
    m = sink.wait_to("u@alonea.test")[-1]
    assert b"line one\r\nline two\r\n" in m.content
    assert_verifies(m.content, keys, n=2)


EIGHT = ("Grüße aus Köln\r\ncafé  \r\n" + "é" * 300 + "\r\n").encode()


def test_8bit_to_8bitmime_receiver(postino_factory, keys, sink):
    p = signer(postino_factory, keys)
    raw = message(b"s@sign.test", EIGHT,
                  b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Transfer-Encoding: 8bit\r\n")
    m = relay(p, sink, raw, mail_options=["BODY=8BITMIME"])
    assert_verifies(m.content, keys, n=2)


def test_8bit_to_7bit_receiver(postino_factory, keys, sink):
    """Signed 8-bit mail is made 7 bit at reception, so a receiver without
    8BITMIME gets the signed bytes unchanged."""
    sink.set_ehlo("127.0.0.4", hide=("8BITMIME",))
    p = signer(postino_factory, keys)
    raw = message(b"s@sign.test", EIGHT,
                  b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Transfer-Encoding: 8bit\r\n")
    m = relay(p, sink, raw, mail_options=["BODY=8BITMIME"])
    assert all(b < 128 for b in m.content)
    assert "BODY=8BITMIME" not in m.mail_options
    assert m.msg.get_payload(decode=True) == EIGHT
    assert_verifies(m.content, keys, n=2)


def test_already_signed_gets_ours_on_top(postino_factory, keys, sink):
    p = signer(postino_factory, keys)
    # a signature by "someone else" (here: our ed.test key, signed by dkimpy)
    raw = message(b"s@sign.test")
    with open(os.path.join(keys["dir"], "keys", "ed.test.e2.key"), "rb") as f:
        pem = f.read()
    from cryptography.hazmat.primitives import serialization
    import base64
    k = serialization.load_pem_private_key(pem, None)
    seed = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())
    theirs = dkim.sign(raw, b"e2", b"ed.test", base64.b64encode(seed),
                       signature_algorithm=b"ed25519-sha256",
                       include_headers=[b"from", b"to", b"subject"])
    m = relay(p, sink, theirs + raw)
    sigs = signatures(m.content)
    assert len(sigs) == 3 and tag(sigs[2], "d") == "ed.test"
    assert_verifies(m.content, keys, n=3)


def test_not_signed_inbound_or_without_key(postino_factory, keys, sink):
    """Mail from outside mynetworks, unauthenticated, is never signed; nor is
    mail whose From: domain has no key, or with dkim_sign_mynetworks=no."""
    p = signer(postino_factory, keys, mynetworks="127.0.0.2/32")
    m = relay(p, sink, message(b"s@sign.test"))
    assert not signatures(m.content)
    assert not p.log_lines("dkim-signed")
    p2 = signer(postino_factory, keys)
    m = relay(p2, sink, message(b"s@other.test"), frm="s@other.test", rcpt="o@alonea.test")
    assert not signatures(m.content)
    p3 = signer(postino_factory, keys, dkim_sign_mynetworks="no")
    m = relay(p3, sink, message(b"s@sign.test"), rcpt="n@alonea.test")
    assert not signatures(m.content)


def test_signer_maps(postino_factory, keys, sink, workdir):
    """dkim_signer_maps: the envelope sender's @domain picks the signing
    domain, whatever the From: says."""
    t = os.path.join(workdir, "signers")
    with open(t, "w") as f:
        f.write("@bulk.test rsa.test\n")
    p = signer(postino_factory, keys, start=False, dkim_signer_maps="hash:" + t)
    p.cli("map", "build", t, check=True)
    p.start()
    m = relay(p, sink, message(b"s@sign.test"), frm="news@bulk.test")
    sigs = signatures(m.content)
    assert len(sigs) == 1 and tag(sigs[0], "d") == "rsa.test"
    assert dkimpy_verify(m.content, keys)


def test_tampering_fails_verification(postino_factory, keys, sink):
    """The verifiers can fail: a changed body byte or header breaks both."""
    p = signer(postino_factory, keys)
    m = relay(p, sink, message(b"s@sign.test", b"pay 100 EUR\r\n"))
    assert_verifies(m.content, keys, n=2)
    for bad in (m.content.replace(b"pay 100 EUR", b"pay 900 EUR"),
                m.content.replace(b"Subject: dkim test", b"Subject: dkim tesT")):
        assert bad != m.content
        assert not dkimpy_verify(bad, keys, 0) and not dkimpy_verify(bad, keys, 1)
        ok, _ = opendkim_verify(bad, keys)
        assert not ok


def test_bad_keys_refused_at_start_and_reload(postino_factory, keys, workdir):
    key = os.path.join(workdir, "open.key")
    shutil.copy(os.path.join(keys["dir"], "keys", "rsa.test.r2.key"), key)
    os.chmod(key, 0o644)
    t = os.path.join(workdir, "bad_keys")
    with open(t, "w") as f:
        f.write("# one bad entry\nbad.test sel:rsa:%s\n" % key)
    p = postino_factory(main={"dkim_key_maps": "hash:" + t}, start=False)
    p.cli("map", "build", t, check=True)
    for cmd in (["check"], ["start"]):
        r = p.cli(*cmd)
        assert r.returncode != 0
        assert key in r.stderr and "%s, line 2" % t in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(p.spool, "pid", "master.pid"))
    # smtpd itself refuses the key as well (started by hand)
    os.makedirs(p.spool, exist_ok=True)
    r = subprocess.run([os.path.join(h.BIN, "smtpd"), "-c", p.conf, "-n", "smtpd", "-t", "inet",
                        "-s", "0"], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert key in p.log() or key in r.stderr
    # a good table: start; then the key goes bad: reload refused, still signing
    os.chmod(key, 0o600)
    p.start()
    os.chmod(key, 0o666)
    r = p.cli("reload")
    assert r.returncode != 0 and key in r.stderr


def _submit(p, raw, rcpt):
    import ssl
    s = smtplib.SMTP("127.0.0.1", p.port, timeout=30)
    s.ehlo("client.test")
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.test")
    s.login("user", PASSWORD)
    p.send("s@sign.test", rcpt, raw=raw, conn=s)
    s.quit()


def test_authenticated_clients(postino_factory, keys, sink, secrets, workdir):
    """A SASL-authenticated client outside mynetworks is signed; its login
    can pick the signing domain (sasl:USER in dkim_signer_maps);
    dkim_sign_authenticated = no turns it off."""
    t = os.path.join(workdir, "signers")
    with open(t, "w") as f:
        f.write("sasl:user ed.test\n")
    main = dict(secrets, mynetworks=OUTSIDE, smtpd_sasl_auth_enable="yes",
                smtpd_tls_security_level="may", smtpd_sasl_failure_delay="0",
                dkim_signer_maps="hash:" + t)
    p = signer(postino_factory, keys, start=False, **main)
    p.cli("map", "build", t, check=True)
    p.start()
    _submit(p, message(b"s@sign.test"), "u@alonea.test")
    m = sink.wait_to("u@alonea.test")[-1]
    sigs = signatures(m.content)
    assert len(sigs) == 1 and tag(sigs[0], "d") == "ed.test"
    assert_verifies(m.content, keys)
    p2 = signer(postino_factory, keys, dkim_sign_authenticated="no", **main)
    _submit(p2, message(b"s@sign.test"), "v@alonea.test")
    assert not signatures(sink.wait_to("v@alonea.test")[-1].content)


def test_bdat_out_to_next_postino(postino_factory, keys, sink):
    """Sent with BDAT (a second postino offers CHUNKING), the signature goes
    in the first chunk and the message still verifies at the end."""
    b = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "myhostname": "next.test"})
    a = signer(postino_factory, keys, relayhost="[127.0.0.1]:%d" % b.port)
    body = b"".join(b"line %d .dotted\r\n" % i for i in range(5000))  # several chunks
    a.send("s@sign.test", "u@alonea.test", raw=message(b"s@sign.test", body))
    m = sink.wait_to("u@alonea.test")[-1]
    b.wait_log(r"disconnect from .* bdat=[1-9]")
    assert_verifies(m.content, keys, n=2)


def test_bounce_returns_the_signed_message(postino_factory, keys, sink):
    """A bounce returns the message as it was sent: signature first."""
    sink.on_rcpt("gone@alonea.test", forever="550 5.1.1 no such user")
    p = signer(postino_factory, keys)
    p.send("s@sender.test", "gone@alonea.test", raw=message(b"s@sign.test", to=b"gone@alonea.test"))
    dsn = sink.wait_to("s@sender.test")[-1]
    returned = [part for part in dsn.msg.walk() if part.get_content_type() == "message/rfc822"]
    assert returned, dsn.content[:2000]
    inner = dsn.content[dsn.content.index(b"DKIM-Signature:"):]
    assert inner.index(b"DKIM-Signature:") < inner.index(b"Received:")
    # the whole message comes back (message/rfc822): it still verifies. Its
    # bytes end where the part does, at the CRLF before the next boundary.
    boundary = b"\r\n--" + dsn.msg.get_boundary().encode()
    inner = inner[:inner.index(boundary)]
    assert inner.endswith(b"Hello from the DKIM tests.\r\n"), inner[-200:]
    assert_verifies(inner, keys, n=2)


# every field the issue names for the default list, beyond message()'s own
LISTED = (b"Cc: <c@alonea.test>\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n"
          b"List-Id: DKIM tests <dkim.sign.test>\r\n"
          b"List-Unsubscribe: <mailto:leave@sign.test>, <https://sign.test/leave/1>\r\n"
          b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
SIGNED = ["from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type",
          "content-transfer-encoding", "list-id", "list-unsubscribe", "list-unsubscribe-post"]


def test_default_header_list(postino_factory, keys, sink):
    """With the default dkim_signed_headers, each signature's h= names every
    field of the issue's list that the message has, From twice (over-signed:
    no From can be added), and there is no l= (the whole body is signed)."""
    p = signer(postino_factory, keys)
    m = relay(p, sink, message(b"s@sign.test", extra=LISTED))
    sigs = signatures(m.content)
    assert len(sigs) == 2
    for sig in sigs:
        names = tag(sig, "h").lower().split(":")
        assert [n for n in SIGNED if n not in names] == [], tag(sig, "h")
        assert names.count("from") == 2, tag(sig, "h")
        assert tag(sig, "l") is None
    assert_verifies(m.content, keys, n=2)


def test_retry_sends_the_same_signed_bytes(postino_factory, keys, sink):
    """Signed once, at reception: the receiver defers the first attempt at
    the end of data and takes the second; both got the same bytes, the
    signatures included, and each copy verifies."""
    sink.on_data("again@alonea.test", ["451 4.3.0 try again later"])
    p = signer(postino_factory, keys, minimal_backoff_time="2s", maximal_backoff_time="2s")
    p.send("s@sign.test", "again@alonea.test",
           raw=message(b"s@sign.test", to=b"again@alonea.test"))
    sent = sink.wait_to("again@alonea.test", timeout=30)[-1]
    assert len(sink.data_refused) == 1
    first = sink.data_refused[0]
    assert p.log_lines(r"to=<again@alonea\.test>, .*status=deferred .*451 4\.3\.0 try again")
    # the retry came after minimal_backoff_time: a signature made at the
    # retry would carry another t= than the one made at reception
    assert sent.time - first.time >= 1
    assert len(signatures(first.content)) == 2
    assert all(int(tag(sig, "t")) <= int(first.time) for sig in signatures(sent.content))
    assert first.content == sent.content
    assert_verifies(first.content, keys, n=2)
    assert_verifies(sent.content, keys, n=2)


def test_verp_copies_each_verify(postino_factory, keys, sink):
    """VERP mail goes out in one transaction per recipient: every copy
    carries the stored signatures, with its own return path, and verifies."""
    p = signer(postino_factory, keys)
    rcpts = ["a@alonea.test", "b@alonea.test", "c@alonea.test"]
    p.send("s@sign.test", rcpts, raw=message(b"s@sign.test", to=b"a@alonea.test"),
           mail_options=["XVERP"])
    for r in rcpts:
        m = sink.wait_to(r)[-1]
        assert m.rcpts == [r]
        assert m.mail_from == "s+%s@sign.test" % r.replace("@", "="), m.mail_from
        assert len(signatures(m.content)) == 2
        assert_verifies(m.content, keys, n=2)


def test_parallel_sessions_and_a_stop_while_signing(postino_factory, keys, sink):
    """Eight sessions at once share each smtpd's signing pool (one thread
    per CPU, apart from the fsync threads); then a stop (SIGTERM) while
    signatures are being made. Every message answered 250 arrives after the
    restart, and every message that arrives is signed and verifies."""
    import threading
    p = signer(postino_factory, keys)
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(n):
        for i in range(500):
            if stop.is_set():
                return
            seq = b"par-%d-%d" % (n, i)
            raw = message(b"s@rsa.test", body=b"message " + seq + b"\r\n",
                          extra=b"X-Seq: " + seq + b"\r\n")
            try:
                with smtplib.SMTP("127.0.0.1", p.port, timeout=30) as c:
                    c.sendmail("s@rsa.test", ["par@alonea.test"], raw)
            except (smtplib.SMTPException, OSError):
                return
            with lock:
                acked.append(seq)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    h.wait_until(lambda: len(acked) >= 40, timeout=60, what="40 messages accepted")
    p.stop()
    stop.set()
    for t in threads:
        t.join(60)
    p.start()

    def seqs():
        return {re.search(rb"^X-Seq: (\S+)", m.content, re.M).group(1)
                for m in sink.to("par@alonea.test")}
    h.wait_until(lambda: set(acked) <= seqs(), timeout=60, what="every 250 at the sink")
    for m in sink.to("par@alonea.test"):
        sigs = signatures(m.content)
        assert len(sigs) == 1 and tag(sigs[0], "d") == "rsa.test", m.content[:800]
        assert dkimpy_verify(m.content, keys), m.content[:800]
