"""International mail on receipt (RFC 6531 SMTPUTF8, RFC 6152 BODY=) and the
bounce it gets (RFC 6533 global DSN).

smtpd alone (the Smtpd harness of test_smtpd_protocol) for the protocol:
SMTPUTF8 in EHLO, UTF-8 addresses only with the parameter (553 5.6.7
without), strict UTF-8 (overlong forms, surrogates, > U+10FFFF and C1
controls refused), smtputf8_enable=no, what the queue file records, domain
matching and what reaches the log. The whole system for the rest: Python's
smtplib with the SMTPUTF8 option delivering to an SMTPUTF8 aiosmtpd sink,
`postino queue show` of a deferred message, and the bounce of an SMTPUTF8
message (message/global-delivery-status, queued and sent with SMTPUTF8)."""
import os
import re
import subprocess

import pytest

import postino_harness as h
# smtpd alone, started by hand (the fixture is shared, not copied)
from test_smtpd_protocol import session, smtpd_factory, wait_files  # noqa: F401

SENDER = "ünïcode@exämple.test"
RCPT = "réception@example.test"
MUST = b"553 5.6.7 Must declare SMTPUTF8 to send unicode address"


def _ehlo_keywords(r):
    rep = r.cmd(b"EHLO client.test\r\n").decode()
    return [ln[4:] for ln in rep.split("\r\n") if ln]


def _log_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- smtpd alone

def test_ehlo_offers_smtputf8(smtpd_factory):
    r = smtpd_factory().raw()
    r.recv_reply()
    assert "SMTPUTF8" in _ehlo_keywords(r)
    off = smtpd_factory(smtputf8_enable="no").raw()
    off.recv_reply()
    kws = _ehlo_keywords(off)
    assert "SMTPUTF8" not in kws and "8BITMIME" in kws


def test_utf8_envelope_stored(smtpd_factory):
    d = smtpd_factory()
    r = session(d)
    assert r.cmd("MAIL FROM:<{}> SMTPUTF8 BODY=8BITMIME\r\n".format(SENDER).encode()) \
        .startswith(b"250 2.1.0")
    assert r.cmd("RCPT TO:<{}>\r\n".format(RCPT).encode()).startswith(b"250 2.1.5")
    # a UTF-8 domain and a quoted UTF-8 local part too
    assert r.cmd("RCPT TO:<\"jö k\"@bücher.example.org>\r\n".encode()).startswith(b"250 2.1.5")
    assert r.cmd(b"DATA\r\n").startswith(b"354")
    assert r.cmd("From: <{}>\r\nSubject: grüße\r\n\r\nkörper\r\n.\r\n".format(SENDER)
                 .encode()).startswith(b"250 2.0.0")
    path = wait_files(d, 1)[0]
    env = open(path, "rb").read().decode("utf-8")
    assert "\nsender=%s\n" % SENDER in env
    assert "\nrcpt=%s\n" % RCPT in env
    assert "\nrcpt=\"jö k\"@bücher.example.org\n" in env
    assert "\nbody=8BITMIME\n" in env and "\nsmtputf8=1\n" in env
    content = d.content(path)
    assert "körper".encode() in content
    # RFC 6531 4.3: the protocol in Received: says UTF8SMTP
    assert re.search(rb"with UTF8SMTP id ", content), content[:400]


def test_body_parameter_stored(smtpd_factory):
    d = smtpd_factory()
    r = session(d)
    for body, want in ((b" BODY=8BITMIME", b"\nbody=8BITMIME\n"), (b" BODY=7BIT", b"\nbody=7BIT\n"),
                       (b"", None)):
        assert r.cmd(b"MAIL FROM:<a@b.example>" + body + b"\r\n").startswith(b"250 2.1.0")
        assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250 2.1.5")
        assert r.cmd(b"DATA\r\n").startswith(b"354")
        rep = r.cmd(b"Subject: b\r\n\r\nx\r\n.\r\n")
        qid = h.QID_RE.search(rep.decode()).group(0)
        path = [p for p in wait_files(d, 1) if p.endswith(qid)][0]
        env = open(path, "rb").read()
        if want:
            assert want in env, env
        else:
            assert b"\nbody=" not in env, env
        assert b"\nsmtputf8=" not in env, env
    assert r.cmd(b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n") == \
        b"501 5.5.4 Error: Unsupported BODY parameter\r\n"


def test_unicode_address_needs_smtputf8(smtpd_factory):
    d = smtpd_factory()
    r = session(d)
    assert r.cmd("MAIL FROM:<{}>\r\n".format(SENDER).encode()) == MUST + b"\r\n"
    assert r.cmd("MAIL FROM:<jörg@example.test>\r\n".encode()) == MUST + b"\r\n"
    assert r.cmd("MAIL FROM:<a@exämple.test>\r\n".encode()) == MUST + b"\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.example>\r\n").startswith(b"250 2.1.0")
    assert r.cmd("RCPT TO:<{}>\r\n".format(RCPT).encode()) == MUST + b"\r\n"
    assert r.cmd("RCPT TO:<x@bücher.example.org>\r\n".encode()) == MUST + b"\r\n"
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250 2.1.5")
    # the transaction's SMTPUTF8 ends with it
    assert r.cmd(b"RSET\r\n").startswith(b"250")
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n").startswith(b"250 2.1.0")
    assert r.cmd("RCPT TO:<{}>\r\n".format(RCPT).encode()).startswith(b"250 2.1.5")
    assert r.cmd(b"RSET\r\n").startswith(b"250")
    assert r.cmd(b"MAIL FROM:<a@b.example>\r\n").startswith(b"250 2.1.0")
    assert r.cmd("RCPT TO:<{}>\r\n".format(RCPT).encode()) == MUST + b"\r\n"


@pytest.mark.parametrize("bad", [
    b"\xc0\xaf",            # overlong '/'
    b"\xe0\x80\xaf",        # overlong, 3 bytes
    b"\xed\xa0\x80",        # surrogate U+D800
    b"\xed\xbf\xbf",        # surrogate U+DFFF
    b"\xf4\x90\x80\x80",    # U+110000
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
    b"\xc3",                # truncated
    b"\x80",                # stray continuation byte
    b"\xc2\x85",            # NEL, a C1 control
    b"\xc2\x9b",            # CSI, a C1 control
    b"\xff",
])
def test_malformed_utf8_refused(smtpd_factory, bad):
    d = smtpd_factory()
    r = session(d)
    rep = r.cmd(b"MAIL FROM:<a" + bad + b"b@example.test> SMTPUTF8\r\n")
    assert rep.startswith(b"501 5.1.7 "), rep
    rep = r.cmd(b"MAIL FROM:<ab@ex" + bad + b"ample.test> SMTPUTF8\r\n")
    assert rep.startswith(b"501 5.1.7 "), rep
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n").startswith(b"250")
    rep = r.cmd(b"RCPT TO:<x" + bad + b"@example.org>\r\n")
    assert rep.startswith(b"501 5.1.3 "), rep
    rep = r.cmd(b"RCPT TO:<x@ex" + bad + b"ample.org>\r\n")
    assert rep.startswith(b"501 5.1.3 "), rep
    # the refused bytes never reach the log raw
    log = _log_bytes(d.log)
    assert bad not in log
    log.decode("utf-8")


def test_smtputf8_parameter_syntax(smtpd_factory):
    d = smtpd_factory()
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n") == \
        b"501 5.5.4 Error: Bad SMTPUTF8 parameter syntax\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8 SMTPUTF8\r\n") == \
        b"501 5.5.4 Error: Bad SMTPUTF8 parameter syntax\r\n"
    assert r.cmd(b"MAIL FROM:<a@b.example> smtputf8\r\n").startswith(b"250 2.1.0")


def test_smtputf8_disabled(smtpd_factory):
    d = smtpd_factory(smtputf8_enable="no")
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n") == \
        b"555 5.5.4 Unsupported option: SMTPUTF8\r\n"
    rep = r.cmd("MAIL FROM:<{}>\r\n".format(SENDER).encode())
    assert rep.startswith(b"553 5.6.7 "), rep
    assert r.cmd(b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n").startswith(b"250 2.1.0")
    rep = r.cmd("RCPT TO:<{}>\r\n".format(RCPT).encode())
    assert rep.startswith(b"553 5.6.7 "), rep
    assert r.cmd(b"RCPT TO:<x@example.org>\r\n").startswith(b"250 2.1.5")


def test_utf8_domains_match_bytewise(smtpd_factory):
    """mydestination/relay_domains: ASCII case-insensitive, UTF-8 byte for byte."""
    d = smtpd_factory(mynetworks="10.0.0.0/8", mydestination="exämple.test",
                      relay_domains=".bücher.test")
    r = session(d)
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n").startswith(b"250")
    ok = ["x@exämple.test", "x@EXäMPLE.Test", "ü@sub.bücher.test", "x@a.b.BüCHER.TEST"]
    for a in ok:
        rep = r.cmd("RCPT TO:<{}>\r\n".format(a).encode())
        assert rep.startswith(b"250 2.1.5"), (a, rep)
    for a in ["x@example.test", "x@bücher.test", "x@sub.bucher.test", "x@other.test"]:
        rep = r.cmd("RCPT TO:<{}>\r\n".format(a).encode())
        assert rep == "554 5.7.1 <{}>: Relay access denied\r\n".format(a).encode(), (a, rep)
    log = _log_bytes(d.log).decode("utf-8")
    assert "to=<x@bücher.test>" in log


def test_unknown_domain_check_skips_u_labels(smtpd_factory, dns):
    """reject_unknown_*_domain cannot look a U-label up (no IDNA): such a
    domain is let through, not refused as unknown; ASCII ones are checked."""
    d = smtpd_factory(dns_servers="127.0.0.1:%d" % dns.port,
                      smtpd_recipient_restrictions="reject_unknown_recipient_domain",
                      smtpd_sender_restrictions="reject_unknown_sender_domain")
    r = session(d)
    assert r.cmd("MAIL FROM:<a@exämple.test> SMTPUTF8\r\n".encode()).startswith(b"250")
    assert r.cmd("RCPT TO:<x@bücher.test>\r\n".encode()).startswith(b"250 2.1.5")
    assert r.cmd(b"RCPT TO:<x@example.test>\r\n").startswith(b"250 2.1.5")
    rep = r.cmd(b"RCPT TO:<x@nowhere.test>\r\n")
    assert rep.startswith(b"550 5.1.2"), rep


def test_log_never_gets_raw_control_bytes(smtpd_factory):
    """Bytes a client may put in HELO (no UTF-8 rule there) are logged as '?'
    when they are not UTF-8 or are C1 controls; valid UTF-8 stays."""
    d = smtpd_factory(mynetworks="10.0.0.0/8", mydestination="example.org")
    r = session(d, helo="EHLO hé\x9b[31m\xc2\x9b\r\n".encode("latin-1"))
    assert r.cmd(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n").startswith(b"250")
    rep = r.cmd("RCPT TO:<ü@other.test>\r\n".encode())
    assert rep.startswith(b"554 5.7.1"), rep
    log = _log_bytes(d.log)
    lines = [ln for ln in log.split(b"\n") if b"NOQUEUE: reject" in ln]
    assert lines, log
    assert b"\x9b" not in log.replace("ü".encode(), b"")
    text = log.decode("utf-8")      # the whole log is valid UTF-8
    assert "to=<ü@other.test>" in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]", text), repr(text)


# ---------------------------------------------------------------- the whole system

def _cli_bytes(p, *args):
    cmd = [os.path.join(h.BIN, "postino"), "-c", p.conf] + list(args)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r
    return r.stdout


def _relay(postino_factory, sink, **extra):
    main = {"relayhost": "[127.0.0.1]:%d" % sink.port}
    main.update(extra)
    return postino_factory(main=main)


def _utf8_message(sender, rcpt, subject="grüße aus Köln"):
    return ("From: <{0}>\r\nTo: <{1}>\r\nSubject: {2}\r\nMessage-ID: <ü1@exämple.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nHallo Jürgen, ça va? ✓\r\n"
            .format(sender, rcpt, subject)).encode("utf-8")


def test_smtplib_smtputf8_delivered(postino_factory, sink):
    p = _relay(postino_factory, sink)
    raw = _utf8_message(SENDER, RCPT)
    qid = p.send(SENDER, RCPT, raw=raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    m = sink.wait_to(RCPT)[0]
    assert m.mail_from == SENDER and m.rcpts == [RCPT]
    assert m.content.endswith(raw.rstrip(b"\r\n")) or raw in m.content, m.content
    p.wait_removed(qid)
    log = _log_bytes(p.maillog).decode("utf-8")
    assert "%s: from=<%s>" % (qid, SENDER) in log
    assert re.search(r"%s: to=<%s>, .*status=sent" % (qid, re.escape(RCPT)), log)
    # passed on to the next hop (the delivery side of RFC 6531)
    assert m.smtputf8, m.mail_options
    assert "BODY=8BITMIME" in m.mail_options, m.mail_options


def test_smtplib_refused_without_smtputf8(postino_factory, sink):
    p = _relay(postino_factory, sink)
    s = p.smtp()
    try:
        s.command_encoding = "utf-8"        # smtplib would not send UTF-8 otherwise
        code, resp = s.mail(SENDER)
        assert (code, resp) == (553, MUST[4:]), (code, resp)
        code, resp = s.mail("a@b.example")
        assert code == 250
        code, resp = s.rcpt(RCPT)
        assert (code, resp) == (553, MUST[4:]), (code, resp)
    finally:
        s.close()


def test_queue_show_body_and_smtputf8(postino_factory, sink):
    p = _relay(postino_factory, sink, minimal_backoff_time="1h", maximal_backoff_time="1h")
    sink.on_rcpt(lambda ip, rcpt: True, forever="451 4.3.0 deferred by the test sink")
    qid = p.send(SENDER, RCPT, raw=_utf8_message(SENDER, RCPT),
                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    plain = p.send("s@sender.test", "x@example.test", mail_options=["BODY=8BITMIME"])
    for q in (qid, plain):
        p.wait_log(r"%s: to=<.*status=deferred" % q)
    show = _cli_bytes(p, "queue", "show", qid).decode("utf-8")
    assert "\nsender: %s\n" % SENDER in show, show
    assert "recipient[0]: %s\n" % RCPT in show, show
    assert "\nbody: 8BITMIME\n" in show and "\nsmtputf8: yes\n" in show, show
    show = _cli_bytes(p, "queue", "show", plain).decode("utf-8")
    assert "\nbody: 8BITMIME\n" in show and "smtputf8" not in show, show
    listing = _cli_bytes(p, "queue", "list").decode("utf-8")
    assert SENDER in listing and RCPT in listing, listing


def test_bounce_of_smtputf8_message_is_global(postino_factory, sink):
    p = _relay(postino_factory, sink)
    gone = "nöbody@example.test"
    sink.on_rcpt(gone, forever="550 5.1.1 <nöbody@example.test>: no such user")
    qid = p.send(SENDER, gone, raw=_utf8_message(SENDER, gone, subject="zurück"),
                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    bounce = sink.wait_for(lambda m: m.mail_from == "" and SENDER in m.rcpts, timeout=30)[0]
    p.wait_removed(qid)
    msg = bounce.msg
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "global-delivery-status"
    head, parts = h.mime_parts(bounce.content)
    assert ("To: <%s>" % SENDER).encode() in head
    types = [re.search(rb"Content-Type: ([^;\r\n]+)", ph).group(1).decode() for ph, _ in parts]
    assert types == ["text/plain", "message/global-delivery-status", "message/global"], types
    assert b"charset=utf-8" in parts[0][0]
    assert ("<%s>" % gone).encode() in parts[0][1]
    blocks = [b for b in parts[1][1].split(b"\r\n\r\n") if b.strip()]
    per_msg, per_rcpt = h.dsn_fields(blocks[0]), [h.dsn_fields(b) for b in blocks[1:]]
    assert per_msg["reporting-mta"] == "dns; postino.test"
    assert len(per_rcpt) == 1
    assert per_rcpt[0]["final-recipient"] == "utf-8; " + gone, per_rcpt
    assert per_rcpt[0]["action"] == "failed" and per_rcpt[0]["status"] == "5.1.1"
    assert "no such user" in per_rcpt[0]["diagnostic-code"]
    assert "Subject: zurück".encode() in parts[2][1]
    # the bounce went out as SMTPUTF8 mail (the delivery side of RFC 6531)
    assert bounce.smtputf8, bounce.mail_options


def test_bounce_of_ascii_message_unchanged(postino_factory, sink):
    """The control: an ASCII message still gets an RFC 3464 report."""
    p = _relay(postino_factory, sink)
    gone = "nobody@example.test"
    sink.on_rcpt(gone, forever="550 5.1.1 no such user")
    qid = p.send("s@sender.test", gone, mail_options=["BODY=8BITMIME"])
    bounce = sink.wait_for(lambda m: m.mail_from == "" and "s@sender.test" in m.rcpts,
                           timeout=30)[0]
    p.wait_removed(qid)
    _, blocks = h.dsn_parts(bounce.msg)
    assert blocks[0]["final-recipient"].strip() == "rfc822; " + gone
    types = [x.get_content_type() for x in bounce.msg.get_payload()]
    assert types == ["text/plain", "message/delivery-status", "message/rfc822"], types
    assert not bounce.smtputf8


@pytest.mark.dns([("mx", "xn--bcher-kva.test", "mx.xn--bcher-kva.test", 10),
                  ("a", "mx.xn--bcher-kva.test", "127.0.0.3")])
def test_international_domain_routed_by_its_a_label(postino_factory, sink):
    """The MX of bücher.test is looked up as xn--bcher-kva.test (IDNA2008);
    the address itself goes out in UTF-8 with SMTPUTF8."""
    p = postino_factory()
    rcpt = "jürgen@bücher.test"
    qid = p.send(SENDER, rcpt, raw=_utf8_message(SENDER, rcpt),
                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    m = sink.wait_to(rcpt)[0]
    assert m.ip == "127.0.0.3", m.ip
    assert m.smtputf8, m.mail_options
    p.wait_removed(qid)


def test_unconvertible_international_domain_bounces(postino_factory, sink):
    """A UTF-8 domain that is no valid IDNA2008 name cannot exist in the DNS:
    the recipient bounces at once instead of being retried."""
    p = postino_factory()
    rcpt = "x@a\u2190\u0301b.test"          # a combining mark after a symbol
    qid = p.send(SENDER, rcpt, raw=_utf8_message(SENDER, rcpt),
                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    p.wait_log(r"%s: to=<.*status=bounced \(.*malformed international domain name" % qid)
