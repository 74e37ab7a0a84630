"""8BITMIME and SMTPUTF8 on the way out (issue 7, items 4 and 5).

The receiver under test is the aiosmtpd sink on 127.0.0.4 (alonea.test);
Sink.set_ehlo takes 8BITMIME or SMTPUTF8 out of its EHLO reply to make it a
7-bit or an ASCII-only server. Bounces go to the sender's sink (127.0.0.5)
and are parsed as RFC 3464 reports. Conversions are checked with Python's
email package: the received message is 7 bit, and every leaf part decodes
to exactly what the original part decodes to.

The SMTPUTF8 tests need smtpd to take the SMTPUTF8 parameter; they skip
while smtpd does not offer SMTPUTF8 in its EHLO reply."""
import email
import email.policy
import re
import smtplib

import pytest

import postino_harness as h

SENDER = "s@sender.test"
RCVR = "127.0.0.4"          # alonea.test

MULTI = (
    b"From: <s@sender.test>\r\nTo: <u@alonea.test>\r\nSubject: 8-bit multipart\r\n"
    b"Message-ID: <multi@it.postino.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="=_outer"\r\n\r\n'
    b"This is a multi-part message in MIME format.\r\n"
    b"--=_outer\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    + "Grüße aus Köln – 日本語 ✓\r\n".encode() + b"trailing space \r\n"
    + b"=equals= and a long line: " + "é".encode() * 100 + b"\r\n"
    b"--=_outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    + "<p>café</p>\r\n".encode()
    + b"--inner\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii\r\n"
    b"--inner--\r\n"
    b"--=_outer\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgc=\r\n"
    b"--=_outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 latin-1\r\n"
    b"--=_outer--\r\n")

NON_MIME = (b"From: <s@sender.test>\r\nTo: <u@alonea.test>\r\nSubject: no MIME\r\n"
            b"Message-ID: <nonmime@it.postino.test>\r\n\r\n"
            + "Grüße, ça va? 1 € = 1 €\r\nsecond line\r\n".encode())


def _parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _leaves(raw):
    """(content type, decoded payload) of every leaf part, in order."""
    return [(p.get_content_type(), p.get_payload(decode=True))
            for p in _parse(raw).walk() if not p.is_multipart()
            and p.get_content_maintype() != "message"]


def _strip_received(content):
    """The content as the client sent it: postino adds one Received: header."""
    assert content.startswith(b"Received: "), content[:80]
    m = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", content)
    return content[m.end():]


def _line(p, rcpt, status, timeout=30):
    return p.wait_log(r"postino/smtp\[\d+\]: [0-9A-F]+: to=<%s>, .*status=%s"
                      % (re.escape(rcpt), status), timeout=timeout)[0]


def _dsn_for(sink, rcpt, timeout=30):
    def find():
        for m in sink.received(lambda m: m.mail_from == "" and SENDER in m.rcpts):
            if rcpt.encode().lower() in m.content.lower():
                return m
        return None
    return h.wait_until(find, timeout=timeout, what="a DSN about %s" % rcpt)


def _seven_bit(content):
    assert all(b < 0x80 for b in content), "8-bit byte at %d" % next(
        i for i, b in enumerate(content) if b >= 0x80)
    assert all(len(ln) <= 998 for ln in content.split(b"\r\n"))


# ---------------------------------------------------------------- 8BITMIME

def test_8bit_to_8bitmime_receiver_byte_for_byte(postino, sink):
    rcpt = "u@alonea.test"
    postino.send(SENDER, rcpt, raw=MULTI, mail_options=["BODY=8BITMIME"])
    m = sink.wait_to(rcpt)[0]
    assert m.ip == RCVR
    assert "BODY=8BITMIME" in m.mail_options, m.mail_options
    assert _strip_received(m.content) == MULTI
    _line(postino, rcpt, "sent")


def test_7bit_declared_gets_no_body_parameter(postino, sink):
    rcpt = "u7@alonea.test"
    postino.send(SENDER, rcpt, mail_options=["BODY=7BIT"])
    m = sink.wait_to(rcpt)[0]
    assert not any(o.startswith("BODY=") for o in m.mail_options), m.mail_options


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_8bit_converted_for_7bit_receiver(postino, sink, declared):
    """A receiver without 8BITMIME gets quoted-printable, whether or not the
    client declared BODY=8BITMIME: the content decides."""
    sink.set_ehlo(RCVR, hide=["8BITMIME"], add=["SIZE 10240000"])
    rcpt = "conv-%s@alonea.test" % declared
    postino.send(SENDER, rcpt, raw=MULTI, mail_options=["BODY=8BITMIME"] if declared else [])
    m = sink.wait_to(rcpt)[0]
    assert not any(o.startswith("BODY=") for o in m.mail_options), m.mail_options
    _seven_bit(m.content)
    got = _strip_received(m.content)
    assert got != MULTI
    assert _leaves(got) == _leaves(MULTI)
    # the SIZE= announced is the size of what was sent, not of the original
    size = [int(o[5:]) for o in m.mail_options if o.startswith("SIZE=")]
    assert size == [len(m.content)], (size, len(m.content))
    # unchanged parts are byte for byte the same, the rest is relabelled
    for same in (b"--inner\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii\r\n",
                 b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgc=\r\n",
                 b"This is a multi-part message in MIME format.\r\n"):
        assert same in got
    assert b"Content-Transfer-Encoding: 8bit" not in got
    assert got.count(b"Content-Transfer-Encoding: quoted-printable\r\n") == 3
    assert all(len(ln) <= 76 for ln in got.split(b"\r\n"))
    _line(postino, rcpt, "sent")


def test_non_mime_8bit_converted(postino, sink):
    sink.set_ehlo(RCVR, hide=["8BITMIME"])
    rcpt = "nonmime@alonea.test"
    postino.send(SENDER, rcpt, raw=NON_MIME)
    m = sink.wait_to(rcpt)[0]
    _seven_bit(m.content)
    msg = _parse(_strip_received(m.content))
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_param("charset") == "unknown-8bit"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_payload(decode=True) == NON_MIME.split(b"\r\n\r\n", 1)[1]


def test_7bit_message_to_7bit_receiver_unchanged(postino, sink):
    sink.set_ehlo(RCVR, hide=["8BITMIME"])
    rcpt = "ascii@alonea.test"
    raw = MULTI.replace("Grüße aus Köln – 日本語 ✓".encode(), b"plain") \
               .replace("é".encode(), b"e").replace("café".encode(), b"cafe") \
               .replace(b"caf\xe9", b"cafe")
    postino.send(SENDER, rcpt, raw=raw, mail_options=["BODY=8BITMIME"])
    m = sink.wait_to(rcpt)[0]
    assert _strip_received(m.content) == raw


def test_conversion_disabled_sends_as_is(postino_factory, sink):
    p = postino_factory(main={"disable_mime_output_conversion": "yes"})
    sink.set_ehlo(RCVR, hide=["8BITMIME"])
    rcpt = "asis@alonea.test"
    p.send(SENDER, rcpt, raw=MULTI, mail_options=["BODY=8BITMIME"])
    m = sink.wait_to(rcpt)[0]
    assert _strip_received(m.content) == MULTI
    assert not any(o.startswith("BODY=") for o in m.mail_options), m.mail_options


UNCONVERTIBLE = {
    "8bit-header": (b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nascii body\r\n",
                    "8-bit data in a header"),
    "8bit-in-base64": (b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                       b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\xff\xfe\r\n",
                       "quoted-printable, base64 or other encoding"),
}


@pytest.mark.parametrize("case", sorted(UNCONVERTIBLE))
def test_unconvertible_bounces_5_6_3(postino, sink, case):
    raw, why = UNCONVERTIBLE[case]
    sink.set_ehlo(RCVR, hide=["8BITMIME"])
    rcpt = "%s@alonea.test" % case
    postino.send(SENDER, rcpt, raw=b"From: <s@sender.test>\r\n" + raw)
    line = _line(postino, rcpt, "bounced")
    assert "dsn=5.6.3," in line, line
    assert "does not offer 8BITMIME" in line and why in line, line
    dsn = _dsn_for(sink, rcpt)
    _, rcpts = h.dsn_parts(dsn.msg)
    assert rcpts[0]["status"] == "5.6.3", rcpts
    assert why in re.sub(r"\s+", " ", rcpts[0]["diagnostic-code"]), rcpts
    assert not sink.to(rcpt), "the receiver got the message"


# ---------------------------------------------------------------- SMTPUTF8

@pytest.fixture
def utf8_postino(postino):
    with postino.smtp() as s:
        if not s.has_extn("smtputf8"):
            pytest.skip("smtpd does not offer SMTPUTF8 yet")
    return postino


UTF8_MSG = ("From: <sénder@sender.test>\r\nTo: <üser@alonea.test>\r\nSubject: Grüße ✓\r\n"
            "Message-ID: <utf8@it.postino.test>\r\n\r\nHallo, Wörld\r\n").encode()


def _send_utf8(p, sender, rcpt, raw):
    with p.smtp() as s:
        s.sendmail(sender, [rcpt], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"])


def test_smtputf8_delivered_to_smtputf8_receiver(utf8_postino, sink):
    rcpt = "üser@alonea.test"
    _send_utf8(utf8_postino, "sénder@sender.test", rcpt, UTF8_MSG)
    m = sink.wait_to(rcpt)[0]
    assert m.smtputf8 and "SMTPUTF8" in m.mail_options, m.mail_options
    assert "BODY=8BITMIME" in m.mail_options, m.mail_options
    assert m.mail_from == "sénder@sender.test"
    assert _strip_received(m.content) == UTF8_MSG


@pytest.mark.parametrize("where", ["address", "header"])
def test_smtputf8_bounced_5_6_7(utf8_postino, sink, where):
    sink.set_ehlo(RCVR, hide=["SMTPUTF8"])
    rcpt = "üser@alonea.test" if where == "address" else "ascii-utf8hdr@alonea.test"
    _send_utf8(utf8_postino, SENDER, rcpt, UTF8_MSG)
    line = _line(utf8_postino, rcpt, "bounced")
    assert "dsn=5.6.7," in line, line
    assert "SMTPUTF8 is required, but was not offered by host" in line, line
    dsn = _dsn_for(sink, "alonea.test")
    # the original was SMTPUTF8 mail: its bounce is an RFC 6533 global DSN
    assert dsn.msg.get_param("report-type") == "global-delivery-status"
    _, rcpts = h.global_dsn_parts(dsn.content)
    assert rcpts[0]["status"] == "5.6.7", rcpts
    assert not sink.to(rcpt)


def test_smtputf8_all_ascii_goes_without(utf8_postino, sink):
    """Requested but not needed (Postfix's rule): delivered without it."""
    sink.set_ehlo(RCVR, hide=["SMTPUTF8"])
    rcpt = "plain@alonea.test"
    raw = b"From: <s@sender.test>\r\nSubject: ascii\r\n\r\nascii only\r\n"
    _send_utf8(utf8_postino, SENDER, rcpt, raw)
    m = sink.wait_to(rcpt)[0]
    assert "SMTPUTF8" not in m.mail_options, m.mail_options
    assert _strip_received(m.content) == raw
