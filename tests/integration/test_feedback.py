"""The feedback consumer (issue #8): bounces and complaints that remote
systems send to our bounce (VERP) domain are accepted from anyone, read by
the `feedback` agent, matched to the original recipient, classified,
logged, suppressed when hard (or a complaint), and never delivered or
bounced back. The reports are built with Python's email package the way
the providers send them; the originals they refer to went through postino
first, so the queue id in our Received: line is a real one."""
import email.message
import re
import smtplib
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

import postino_harness as h

BOUNCE_DOMAIN = "bounce.sender.test"
FEEDBACK_ROW = "feedback unix - - n - - feedback"


def _instance(postino_factory, **main):
    cfg = {"feedback_domains": BOUNCE_DOMAIN}
    cfg.update(main)
    return postino_factory(main=cfg, master_extra=[FEEDBACK_ROW])


def _verp(rcpt):
    local, domain = rcpt.split("@")
    return "bounces+%s=%s@%s" % (local, domain, BOUNCE_DOMAIN)


def _fields(pairs):
    """A header-only block (the fields of a delivery-status or
    feedback-report part), as the email package wants them."""
    m = email.message.Message()
    for name, value in pairs:
        m[name] = value
    return m


def _send_original(p, sink, rcpt):
    """Mail from news@sender.test to rcpt through postino; returns (queue
    id, the message as the receiving MX got it)."""
    qid = p.send("news@sender.test", rcpt, subject="March news")
    m = sink.wait_to(rcpt)[0]
    p.wait_removed(qid)
    sink.messages.clear()
    return qid, m


def _send_report(p, mail_from, rcpt, msg):
    return p.send(mail_from, rcpt, raw=msg.as_bytes() if hasattr(msg, "as_bytes") else msg)


def _consumed(p, qid, rcpt):
    """The report was read and answered like a delivery: relay=feedback,
    sent, removed; the queue is empty at that moment (no bounce queued)."""
    p.wait_log(r"%s: to=<%s>, relay=feedback, .*status=sent \(feedback: " % (qid, re.escape(rcpt)))
    p.wait_removed(qid)
    assert not p.queue_files(), "something was queued in reply to a report"


def _suppressed(p, addr, reason, scope=None):
    """`postino suppress list` shows addr with reason (and scope)."""
    h.wait_until(lambda: addr in p.cli("suppress", "list").stdout,
                 what="%s in the suppression list" % addr)
    line = [ln for ln in p.cli("suppress", "list").stdout.splitlines() if addr in ln][0]
    assert reason in line, line
    if scope is not None:
        assert scope in line, line
    return line


def _not_suppressed(p, addr):
    r = p.cli("suppress", "list")
    assert r.returncode == 0, r.stderr
    assert addr not in r.stdout
    assert not p.log_lines(r"suppress(ed)? <%s>" % re.escape(addr))


def test_rfc3464_dsn_matched_classified_suppressed(postino_factory, sink):
    p = _instance(postino_factory)
    orig_qid, orig = _send_original(p, sink, "alice@example.test")
    msgid = orig.msg["Message-ID"]

    dsn = MIMEMultipart("report", report_type="delivery-status")
    dsn["From"] = "MAILER-DAEMON@mx1.example.test (Mail Delivery System)"
    dsn["To"] = _verp("alice@example.test")
    dsn["Subject"] = "Undelivered Mail Returned to Sender"
    dsn["Auto-Submitted"] = "auto-replied"
    dsn.attach(MIMEText("This is the mail system at host mx1.example.test.\n\n"
                        "<alice@example.test>: user unknown\n"))
    status = MIMEBase("message", "delivery-status")
    status.set_payload([
        _fields([("Reporting-MTA", "dns; mx1.example.test")]),
        _fields([("Final-Recipient", "rfc822; alice@example.test"),
                 ("Original-Recipient", "rfc822;alice@example.test"),
                 ("Action", "failed"), ("Status", "5.1.1"),
                 ("Remote-MTA", "dns; store.example.test"),
                 ("Diagnostic-Code", "smtp; 550 5.1.1 <alice@example.test>: Recipient\n"
                                     "    address rejected: User unknown in virtual mailbox table")])])
    dsn.attach(status)
    headers = orig.content.split(b"\r\n\r\n", 1)[0].decode() + "\n"
    dsn.attach(MIMEText(headers, "rfc822-headers"))

    qid = _send_report(p, "", _verp("alice@example.test"), dsn)
    line = p.wait_log(r"%s: oob_bounce to=<alice@example.test>" % qid)[0]
    assert ("orig_queue_id=%s, orig_message_id=%s, report=rfc3464, dsn=5.1.1, "
            "category=bad-mailbox, status=bounced (550 5.1.1 <alice@example.test>: Recipient "
            "address rejected: User unknown in virtual mailbox table)" % (orig_qid, msgid)) in line
    _consumed(p, qid, _verp("alice@example.test"))
    _suppressed(p, "alice@example.test", "bad-mailbox", scope="(global)")
    assert not sink.received(), "a report was delivered or answered"


def _text_bounce(rcpt_verp, body, subject):
    m = EmailMessage()
    m["From"] = "Mail Delivery System <Mailer-Daemon@mx1.example.test>"
    m["To"] = rcpt_verp
    m["Subject"] = subject
    m.set_content(body)
    return m


def test_exim_and_qmail_bounces(postino_factory, sink):
    p = _instance(postino_factory)
    orig_qid, orig = _send_original(p, sink, "dave@example.test")
    exim = ("This message was created automatically by mail delivery software.\n\n"
            "A message that you sent could not be delivered to one or more of its\n"
            "recipients. This is a permanent error. The following address(es) failed:\n\n"
            "  dave@example.test\n"
            "    host mx1.example.test [127.0.0.2]\n"
            "    SMTP error from remote mail server after RCPT TO:<dave@example.test>:\n"
            "    552 5.2.2 <dave@example.test>: mailbox is full\n\n"
            "------ This is a copy of the message, including all the headers. ------\n\n"
            + orig.content.decode().replace("\r\n", "\n"))
    qid = _send_report(p, "", _verp("dave@example.test"),
                       _text_bounce(_verp("dave@example.test"), exim,
                                    "Mail delivery failed: returning message to sender"))
    line = p.wait_log(r"%s: oob_bounce to=<dave@example.test>" % qid)[0]
    assert "orig_queue_id=%s" % orig_qid in line
    assert "report=exim, dsn=5.2.2, category=quota-issues, status=bounced (" in line
    _consumed(p, qid, _verp("dave@example.test"))
    _not_suppressed(p, "dave@example.test")     # a full mailbox is not a dead one

    qmail = ("Hi. This is the qmail-send program at mx1.example.test.\n"
             "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
             "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
             "<erin@example.test>:\n"
             "127.0.0.2 does not like recipient.\n"
             "Remote host said: 550 5.1.1 <erin@example.test>... No such user here\n"
             "Giving up on 127.0.0.2.\n\n"
             "--- Below this line is a copy of the message.\n\n"
             "From: news@sender.test\nTo: erin@example.test\n"
             "Message-ID: <erin-1@sender.test>\n\nHi.\n")
    qid = _send_report(p, "", _verp("erin@example.test"),
                       _text_bounce(_verp("erin@example.test"), qmail, "failure notice"))
    line = p.wait_log(r"%s: oob_bounce to=<erin@example.test>" % qid)[0]
    assert "orig_message_id=<erin-1@sender.test>, report=qmail, dsn=5.1.1, " \
           "category=bad-mailbox, status=bounced (" in line
    _consumed(p, qid, _verp("erin@example.test"))
    _suppressed(p, "erin@example.test", "bad-mailbox")
    assert not sink.received()


def test_arf_complaint_suppresses(postino_factory, sink):
    p = _instance(postino_factory)
    orig_qid, orig = _send_original(p, sink, "carol@example.test")
    arf = MIMEMultipart("report", report_type="feedback-report")
    arf["From"] = "Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.example.test>"
    arf["To"] = "fbl@" + BOUNCE_DOMAIN
    arf["Subject"] = "FW: March news"
    # providers' human part is often base64 UTF-8
    arf.attach(MIMEText("This is an email abuse report for an email message "
                        "received from IP 127.0.0.1 \u2014 see RFC 5965.\n", "plain", "utf-8"))
    fr = MIMEBase("message", "feedback-report")
    fr.set_payload([_fields([
        ("Feedback-Type", "abuse"), ("User-Agent", "Yahoo!-Mail-Feedback/2.0"), ("Version", "1"),
        ("Original-Mail-From", "<%s>" % _verp("carol@example.test")),
        ("Original-Rcpt-To", "<carol@example.test>"),
        ("Arrival-Date", "Thu, 7 Mar 2024 12:29:10 +0000"), ("Source-IP", "127.0.0.1"),
        ("Reported-Domain", "sender.test")])])
    arf.attach(fr)
    arf.attach(MIMEMessage(orig.msg))
    qid = _send_report(p, "", "fbl@" + BOUNCE_DOMAIN, arf)
    line = p.wait_log(r"%s: feedback type=abuse to=<carol@example.test>" % qid)[0]
    assert "orig_queue_id=%s" % orig_qid in line
    assert "reported_domain=sender.test, category=spam-related, status=complaint" in line
    _consumed(p, qid, "fbl@" + BOUNCE_DOMAIN)
    _suppressed(p, "carol@example.test", "complaint", scope="sender.test")
    assert not sink.received()


def test_malformed_reports_dropped_without_backscatter(postino_factory, sink):
    p = _instance(postino_factory)
    # an auto-reply to the return path, from an address whose MX is the sink:
    # a bounce or reply would land there
    auto = _text_bounce(_verp("kim@example.test"),
                        "I am out of the office until 12 March.\n", "Out of office")
    qid = _send_report(p, "kim@example.test", _verp("kim@example.test"), auto)
    p.wait_log(r"%s: feedback: unrecognised report from <kim@example.test>: no delivery-status "
               r"or feedback-report part, and no bounce text recognised" % qid)
    _consumed(p, qid, _verp("kim@example.test"))

    broken = ("From: someone@example.test\r\nTo: bounces@%s\r\nSubject: report\r\n"
              "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
              " boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: message/delivery-status\r\n\r\n"
              "Reporting-MTA: dns; mx.example.test\r\n\r\n--XX--\r\n" % BOUNCE_DOMAIN)
    qid = _send_report(p, "someone@example.test", "bounces@" + BOUNCE_DOMAIN, broken)
    p.wait_log(r"%s: feedback: unrecognised report from <someone@example.test>: "
               r"delivery-status part names no recipient" % qid)
    _consumed(p, qid, "bounces@" + BOUNCE_DOMAIN)
    assert not p.log_lines(r"oob_bounce|feedback: .*suppress")
    assert not sink.received(), "a malformed report caused mail"


def test_outside_client_may_send_reports_but_not_relay(postino_factory, sink):
    # 127.0.0.1 is a stranger here: only 10/8 is trusted
    p = _instance(postino_factory, mynetworks="10.0.0.0/8")
    s = p.smtp()
    try:
        assert s.mail("")[0] == 250
        assert s.rcpt(_verp("zoe@example.test"))[0] == 250
        assert s.rcpt("anyone@" + BOUNCE_DOMAIN)[0] == 250
        code, text = s.rcpt("zoe@example.test")
        assert code == 554 and b"Relay access denied" in text
        code, text = s.rcpt("x@sub." + BOUNCE_DOMAIN)
        assert code == 554, "only the domain itself was configured"
        s.rset()
    finally:
        s.quit()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        p.send("mallory@example.test", "zoe@example.test")
    assert not sink.received()


@pytest.mark.parametrize("delims", ["+=", "-="])
def test_verp_round_trip_bounce_and_complaint_suppress(postino_factory, sink, delims):
    """The whole loop of issue 8: mail goes out with VERP return paths
    (sender_verp_maps), a remote MTA later bounces one copy (a qmail text
    bounce that names no usable recipient: only the VERP address says who)
    and a provider's feedback loop reports the other as spam, both sent to
    the exact return paths the receiver saw. Each is matched to its
    recipient, classified, logged and suppressed; the next message to them
    is not sent. With verp_delimiters set in main.cf both ways use them."""
    p = postino_factory(start=False, master_extra=[FEEDBACK_ROW])
    src = p.conf + "/verp"
    with open(src, "w") as f:
        f.write("@sender.test bounces@%s\n" % BOUNCE_DOMAIN)
    p.cli("map", "build", src, check=True)
    p.set(sender_verp_maps="hash:" + src, feedback_domains=BOUNCE_DOMAIN,
          verp_delimiters=delims)
    p.start()

    qid = p.send("news@sender.test", ["alice@example.test", "bob@example.test"],
                 subject="March news")
    got = {r: sink.wait_to(r)[0] for r in ("alice@example.test", "bob@example.test")}
    p.wait_removed(qid)
    for r, m in got.items():
        assert m.mail_from == _verp(r).replace("+", delims[0]), m.mail_from
    sink.messages.clear()

    bounce = ("Hi. This is the qmail-send program at mx1.example.test.\n"
              "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
              "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
              "<a7@alias.example.test>:\n"
              "Sorry, no mailbox here by that name. (#5.1.1)\n\n"
              "--- Below this line is a copy of the message.\n\n")
    b = EmailMessage()
    b["From"] = "MAILER-DAEMON@mx1.example.test"
    b["To"] = got["alice@example.test"].mail_from
    b["Subject"] = "failure notice"
    b.set_content(bounce)
    bq = _send_report(p, "", got["alice@example.test"].mail_from, b)

    arf = MIMEMultipart("report", report_type="feedback-report")
    arf["From"] = "feedback@fbl.example.test"
    arf["To"] = got["bob@example.test"].mail_from
    arf["Subject"] = "complaint"
    arf.attach(MIMEText("This is an email abuse report.\n"))
    fr = MIMEBase("message", "feedback-report")
    fr.set_payload([_fields([("Feedback-Type", "abuse"), ("User-Agent", "FBL/1.0"),
                             ("Version", "1")])])
    arf.attach(fr)
    hdrs = got["bob@example.test"].content.split(b"\r\n\r\n", 1)[0].decode() + "\n"
    arf.attach(MIMEText(hdrs, "rfc822-headers"))
    aq = _send_report(p, "", got["bob@example.test"].mail_from, arf)

    line = p.wait_log(r"%s: oob_bounce to=<alice@example\.test>" % bq)[0]
    assert "dsn=5.1.1, category=bad-mailbox" in line, line
    line = p.wait_log(r"%s: feedback type=abuse to=<bob@example\.test>" % aq)[0]
    assert "orig_queue_id=%s" % qid in line and "category=spam-related" in line, line
    _suppressed(p, "alice@example.test", "bad-mailbox", scope="(global)")
    _suppressed(p, "bob@example.test", "complaint", scope="sender.test")

    q2 = p.send("news@sender.test", ["alice@example.test", "bob@example.test",
                                     "carol@example.test"], subject="April news")
    sink.wait_to("carol@example.test")
    p.wait_removed(q2)
    for r in ("alice", "bob"):
        line = p.wait_log(r"%s: to=<%s@example\.test>, .*status=bounced \(recipient suppressed"
                          % (q2, r))[0]
        assert "dsn=5.7.1" in line, line
    assert not sink.to("alice@example.test") and not sink.to("bob@example.test")
