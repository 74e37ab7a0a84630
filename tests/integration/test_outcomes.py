"""Per-recipient outcomes: 5xx bounces with an RFC 3464 DSN, 4xx retries,
expiry, NOTIFY=NEVER, and the null sender never being bounced."""
import re
import time

import pytest

import postino_harness as h

SENDER = "s@sender.test"


def _dsns(sink, sender=SENDER):
    return sink.received(lambda m: m.mail_from == "" and sender in [r.lower() for r in m.rcpts])


def test_one_of_three_rejected_gets_dsn(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 <bad@example.test>: no such user")
    rcpts = ["a@example.test", "bad@example.test", "c@example.test"]
    qid = p.send(SENDER, rcpts, subject="three")
    for r in ("a@example.test", "c@example.test"):
        m = sink.wait_to(r)[0]
        assert "bad@example.test" not in [x.lower() for x in m.rcpts]
    dsn = sink.wait_for(lambda m: m.mail_from == "" and SENDER in m.rcpts)[0]
    p.wait_log(r"%s: to=<bad@example.test>, .*dsn=5\.1\.1, status=bounced" % qid)
    p.wait_log(r"postino/bounce\[\d+\]: %s: sender non-delivery notification: [0-9A-Fa-f]+" % qid)
    msg_fields, rcpt_blocks = h.dsn_parts(dsn.msg)
    assert "reporting-mta" in msg_fields
    assert len(rcpt_blocks) == 1, rcpt_blocks
    b = rcpt_blocks[0]
    assert b["action"].strip().lower() == "failed"
    assert re.match(r"5\.\d+\.\d+", b["status"].strip())
    assert re.match(r"rfc822;\s*bad@example\.test", b["final-recipient"].strip(), re.I)
    p.wait_removed(qid)
    time.sleep(1.5)
    assert len(_dsns(sink)) == 1, "exactly one DSN expected"


def test_4xx_retried_then_delivered(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("slow@example.test", ["451 4.3.0 try again later"])
    qid = p.send(SENDER, "slow@example.test")
    p.wait_log(r"%s: to=<slow@example.test>, .*status=deferred" % qid)
    p.wait_log(r"%s: to=<slow@example.test>, .*status=sent" % qid, timeout=30)
    p.wait_removed(qid)
    assert len(sink.to("slow@example.test")) == 1
    attempts = [x for x in sink.rcpt_log if x[1] == "slow@example.test"]
    assert len(attempts) >= 2
    assert not _dsns(sink)


def test_expiry_bounces_after_lifetime(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "maximal_queue_lifetime": "2s"})
    sink.on_rcpt("never@example.test", forever="451 4.7.1 never ready")
    qid = p.send(SENDER, "never@example.test")
    p.wait_log(r"%s: to=<never@example.test>, .*status=deferred" % qid)
    dsn = sink.wait_for(lambda m: m.mail_from == "" and SENDER in m.rcpts, timeout=40)[0]
    _, blocks = h.dsn_parts(dsn.msg)
    assert len(blocks) == 1
    assert blocks[0]["action"].strip().lower() == "failed"
    assert re.match(r"rfc822;\s*never@example\.test", blocks[0]["final-recipient"].strip(), re.I)
    p.wait_removed(qid, timeout=30)
    assert not sink.to("never@example.test")


def test_notify_never_no_dsn(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 no such user")
    qid = p.send(SENDER, "bad@example.test", rcpt_options=["NOTIFY=NEVER"])
    p.wait_log(r"%s: to=<bad@example.test>, .*status=bounced" % qid)
    p.wait_removed(qid)
    time.sleep(3)
    assert not _dsns(sink), "NOTIFY=NEVER must suppress the DSN"
    assert not p.log_lines(r"%s: sender non-delivery notification" % qid)


def test_null_sender_never_bounced(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 no such user")
    qid = p.send("", "bad@example.test")
    p.wait_log(r"%s: to=<bad@example.test>, .*status=bounced" % qid)
    p.wait_removed(qid)
    p.wait_log(r"(?i)%s: .*postmaster" % qid, timeout=10)
    time.sleep(2)
    assert not p.log_lines(r"%s: sender non-delivery notification" % qid)
    # Nothing but (at most) a postmaster notice may leave the system.
    others = sink.received(lambda m: m.mail_from == "" and not any(
        r.lower().startswith("postmaster@") for r in m.rcpts))
    assert not others, others
    p.wait_queue_empty(timeout=20)


def test_double_bounce_to_postmaster_then_dropped(relay_postino, sink):
    """A notification that cannot be delivered goes to postmaster from
    double-bounce@; when postmaster refuses it too, it is logged and
    dropped: never a third notice."""
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 no such user")
    sink.on_rcpt("postmaster@postino.test", forever="550 5.1.1 no postmaster here")
    qid = p.send("", "bad@example.test")
    line = p.wait_log(r"%s: postmaster non-delivery notification: " % qid)[0]
    notice = line.rsplit(" ", 1)[1]
    p.wait_log(r"%s: from=<double-bounce@postino\.test>" % notice)
    p.wait_log(r"%s: to=<postmaster@postino\.test>, .*status=bounced" % notice)
    p.wait_log(r"%s: undeliverable postmaster notification discarded" % notice)
    p.wait_queue_empty(timeout=20)
    assert not sink.received(), sink.received()
    assert len(p.log_lines(r"non-delivery notification: ")) == 1
