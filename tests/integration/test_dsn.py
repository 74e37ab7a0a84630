"""Delivery status notifications beyond the plain failure (test_outcomes):
delay warnings, NOTIFY=SUCCESS, ENVID/ORCPT carried into the report,
RET=HDRS vs RET=FULL, and the envelope/header identity of a bounce (null
sender, From: MAILER-DAEMON). Reports are parsed with Python's email
package; the sink is a real aiosmtpd receiver. Last, the bounce daemon's
side of its protocol with qmgr: a malformed request is refused and its
connection dropped, and nothing of it is applied."""
import glob
import os
import re
import time

import postino_harness as h

SENDER = "s@sender.test"
BODY_MARK = "BODY-MARKER-4711 this line is in the body only"


def _dsns(sink, sender=SENDER):
    return sink.received(lambda m: m.mail_from == "" and sender in [r.lower() for r in m.rcpts])


def _dsn_for(sink, rcpt, timeout=30):
    """The first DSN to SENDER that reports on rcpt."""
    def find():
        for m in _dsns(sink):
            if rcpt.lower() in m.content.decode(errors="replace").lower():
                return m
        return None
    return h.wait_until(find, timeout=timeout, what="a DSN about %s" % rcpt)


def _actions(dsn):
    _, blocks = h.dsn_parts(dsn.msg)
    return [b.get("action", "").strip().lower() for b in blocks]


def _relay(postino_factory, sink, **extra):
    main = {"relayhost": "[127.0.0.1]:%d" % sink.port}
    main.update(extra)
    return postino_factory(main=main)


def test_delay_warning_once_then_delivered(postino_factory, sink):
    p = _relay(postino_factory, sink, delay_warning_time="2s")
    rcpt = "slowpoke@example.test"
    sink.on_rcpt(rcpt, forever="451 4.3.0 not yet, try later")
    qid = p.send(SENDER, rcpt, subject="delayed")
    p.wait_log(r"%s: to=<%s>, .*status=deferred" % (qid, rcpt))
    dsn = _dsn_for(sink, rcpt, timeout=30)
    assert _actions(dsn) == ["delayed"], _actions(dsn)
    msg_fields, blocks = h.dsn_parts(dsn.msg)
    assert re.match(r"4\.\d+\.\d+", blocks[0]["status"].strip()), blocks[0]
    p.wait_log(r"%s: sender delay notification: " % qid)
    # Keep deferring for a few more retries: no second warning may follow.
    time.sleep(4)
    with sink.lock:
        sink.rules.clear()            # now the receiver accepts
    p.cli("queue", "flush", check=True)
    sink.wait_to(rcpt, timeout=30)
    p.wait_removed(qid, timeout=30)
    time.sleep(1.5)
    delayed = [m for m in _dsns(sink) if "delayed" in _actions(m)]
    assert len(delayed) == 1, "expected exactly one delay warning, got %d" % len(delayed)
    assert len(p.log_lines(r"%s: sender delay notification" % qid)) == 1
    # Delivered in the end: no failure report.
    assert all("failed" not in _actions(m) for m in _dsns(sink))


def test_notify_success_report(postino_factory, sink):
    p = _relay(postino_factory, sink)
    rcpt = "happy@example.test"
    qid = p.send(SENDER, rcpt, rcpt_options=["NOTIFY=SUCCESS"], subject="success please")
    sink.wait_to(rcpt)
    dsn = _dsn_for(sink, rcpt)
    acts = _actions(dsn)
    assert len(acts) == 1 and acts[0] in ("delivered", "relayed"), acts
    _, blocks = h.dsn_parts(dsn.msg)
    assert re.match(r"2\.\d+\.\d+", blocks[0]["status"].strip()), blocks[0]
    assert re.match(r"rfc822;\s*happy@example\.test", blocks[0]["final-recipient"].strip(), re.I)
    p.wait_log(r"%s: sender delivery status notification: " % qid)
    p.wait_removed(qid)


def test_no_success_report_without_notify(postino_factory, sink):
    """The control for the test above: plain delivery reports nothing."""
    p = _relay(postino_factory, sink)
    qid = p.send(SENDER, "plain@example.test")
    sink.wait_to("plain@example.test")
    p.wait_removed(qid)
    time.sleep(1.5)
    assert not _dsns(sink)


def test_envid_and_orcpt_in_report(postino_factory, sink):
    p = _relay(postino_factory, sink)
    rcpt = "gone@example.test"
    sink.on_rcpt(rcpt, forever="550 5.1.1 <gone@example.test>: no such user")
    qid = p.send(SENDER, rcpt, mail_options=["ENVID=campaign-42.x7"],
                 rcpt_options=["ORCPT=rfc822;original+2Bgone@example.test"])
    dsn = _dsn_for(sink, rcpt)
    msg_fields, blocks = h.dsn_parts(dsn.msg)
    assert msg_fields.get("original-envelope-id", "").strip() == "campaign-42.x7", msg_fields
    assert len(blocks) == 1
    orcpt = blocks[0].get("original-recipient", "").strip()
    # xtext: +2B is "+"; RFC 3464 keeps the xtext form or decodes it.
    assert re.fullmatch(r"(?i)rfc822;\s*original(\+2B|\+)gone@example\.test", orcpt), blocks[0]
    assert blocks[0]["action"].strip().lower() == "failed"
    p.wait_removed(qid)


def _returned_part(dsn):
    """The third part of the report: the original message or its headers."""
    parts = dsn.msg.get_payload()
    assert isinstance(parts, list) and len(parts) >= 3, [x.get_content_type() for x in parts]
    return parts[2]


def _bounce_with_ret(p, sink, rcpt, ret):
    sink.on_rcpt(rcpt, forever="550 5.1.1 no such user here")
    body = "First line.\r\n%s\r\n" % BODY_MARK
    qid = p.send(SENDER, rcpt, body=body, mail_options=["RET=%s" % ret], subject="ret %s" % ret)
    dsn = _dsn_for(sink, rcpt)
    p.wait_removed(qid)
    return dsn


def test_ret_hdrs_returns_headers_only(postino_factory, sink):
    p = _relay(postino_factory, sink)
    dsn = _bounce_with_ret(p, sink, "hdrs@example.test", "HDRS")
    part = _returned_part(dsn)
    assert part.get_content_type() == "text/rfc822-headers", part.get_content_type()
    text = part.as_string()
    assert "Subject: ret HDRS" in text
    assert BODY_MARK not in dsn.content.decode(errors="replace"), "RET=HDRS returned the body"


def test_ret_full_returns_message(postino_factory, sink):
    p = _relay(postino_factory, sink)
    dsn = _bounce_with_ret(p, sink, "full@example.test", "FULL")
    part = _returned_part(dsn)
    assert part.get_content_type() == "message/rfc822", part.get_content_type()
    inner = part.get_payload()
    inner = inner[0] if isinstance(inner, list) else inner
    assert inner["Subject"] == "ret FULL"
    assert BODY_MARK in dsn.content.decode(errors="replace"), "RET=FULL lost the body"


def test_bounce_identity_null_sender_mailer_daemon(postino_factory, sink):
    p = _relay(postino_factory, sink)
    rcpt = "nobody-here@example.test"
    sink.on_rcpt(rcpt, forever="550 5.1.1 unknown")
    qid = p.send(SENDER, rcpt)
    dsn = _dsn_for(sink, rcpt)
    assert dsn.mail_from == "", "bounce must use MAIL FROM:<>, got <%s>" % dsn.mail_from
    assert [r.lower() for r in dsn.rcpts] == [SENDER]
    assert "MAILER-DAEMON" in (dsn.msg["From"] or ""), dsn.msg["From"]
    assert dsn.msg["Auto-Submitted"] is None or \
        dsn.msg["Auto-Submitted"].strip().lower().startswith("auto-replied")
    p.wait_removed(qid)


def _bounce_peer(p):
    """A connection to private/bounce, as qmgr keeps one."""
    return h.RecordPeer(os.path.join(p.spool, "private", "bounce"))


def _dropped(p, record, why):
    """record gets status=fail naming why, then the connection ends."""
    h.record_dropped(os.path.join(p.spool, "private", "bounce"), record, why)
    p.wait_log(r"bounce\[\d+\]: error: malformed record from qmgr: .*%s.*; dropping the "
               r"connection" % re.escape(why))


def test_bounce_drops_malformed_request(postino_factory, sink):
    p = _relay(postino_factory, sink)
    rcpt = "later@example.test"
    sink.on_rcpt(rcpt, forever="451 4.3.0 not yet, try later")
    qid = p.send(SENDER, rcpt, subject="kept deferred")
    p.wait_log(r"%s: to=<%s>, .*status=deferred" % (qid, rcpt))
    _dropped(p, b"request=bounce\nqueue_id=%s\nrcpt=0\n\n" % qid.encode(), "proto")
    _dropped(p, b"proto=1\nrequest=bounce\nrcpt=0\n\n", "queue_id")
    _dropped(p, b"proto=1\nrequest=bounce\nqueue_id=%s\nrcpt=0\nrcpt=7\n\n" % qid.encode(),
             "recipient index")
    # A request bounce declines is no malformed one: answered, connection kept.
    b = _bounce_peer(p)
    try:
        r = b.ask(b"proto=1\nrequest=nonsense\nqueue_id=%s\n\n" % qid.encode())
        assert r["status"] == "fail" and "unknown request" in r["reason"], r
        r = b.ask(b"proto=1\nrequest=nonsense\nqueue_id=%s\n\n" % qid.encode())
        assert r is not None and r["status"] == "fail", r
    finally:
        b.close()
    # Nothing of the dropped requests was applied: no report, no dsn_sent.
    time.sleep(1)
    assert not p.log_lines(r"%s: sender non-delivery notification" % qid)
    assert not _dsns(sink)
    path, = glob.glob(os.path.join(p.spool, "queue", "*", qid))
    with open(path, "rb") as f:
        assert b"dsn_sent" not in f.read()
