"""Queue administration through the postino CLI against a running system:
hold/release/delete/requeue by id, by -d domain, by -s sender and ALL;
held mail stays put until released; queue show; the mailq entry point;
and an ordinary user may not change (or list) the queue.

Mail is kept deferred by the sink answering 451 with a one-hour back-off,
so only the CLI can cause another delivery attempt."""
import re
import time

import pytest

import postino_harness as h

SENDER = "s@sender.test"
OTHER = "other@sender.test"


def _deferring(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
    sink.on_rcpt(lambda ip, rcpt: True, forever="451 4.3.0 deferred by the test sink")
    return p


def _accept_all(sink):
    with sink.lock:
        sink.rules.clear()


def _queue_deferred(p, sender, rcpt, **kw):
    qid = p.send(sender, rcpt, **kw)
    p.wait_log(r"%s: to=<%s>, .*status=deferred" % (qid, re.escape(rcpt)))
    return qid


def _entry(out, qid):
    """The mailq-style entry of qid (the id line up to the blank line)."""
    i = out.find(qid)
    assert i >= 0, "%s not listed:\n%s" % (qid, out)
    return out[i:].split("\n\n")[0]


def _attempts(sink, rcpt):
    return len([x for x in sink.rcpt_log if x[1].lower() == rcpt.lower()])


def _count(r):
    m = re.search(r"(\d+) message", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m.group(1))


def test_hold_release_by_id(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    rcpt = "held@example.test"
    qid = _queue_deferred(p, SENDER, rcpt)
    r = p.cli("queue", "hold", qid, check=True)
    assert _count(r) == 1
    assert _entry(p.queue_list()[1], qid).startswith(qid + "!"), "held mail is marked with !"
    _accept_all(sink)
    before = _attempts(sink, rcpt)
    p.cli("queue", "flush", check=True)
    time.sleep(3)
    assert not sink.to(rcpt), "held mail was delivered"
    assert _attempts(sink, rcpt) == before, "held mail was even tried"
    assert qid in p.queue_list()[0]
    r = p.cli("queue", "release", qid, check=True)
    assert _count(r) == 1
    p.cli("queue", "flush", check=True)
    sink.wait_to(rcpt, timeout=20)
    p.wait_removed(qid)


def test_requeue_and_delete_by_id(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    a = _queue_deferred(p, SENDER, "again@example.test")
    b = _queue_deferred(p, SENDER, "bin@example.test")
    n = _attempts(sink, "again@example.test")
    r = p.cli("queue", "requeue", a, check=True)
    assert _count(r) == 1
    h.wait_until(lambda: _attempts(sink, "again@example.test") > n, timeout=20,
                 what="a new delivery attempt after requeue")
    r = p.cli("queue", "delete", b, check=True)
    assert _count(r) == 1
    h.wait_until(lambda: b not in p.queue_files(), timeout=10, what="%s's file removed" % b)
    ids, out = p.queue_list()
    assert b not in ids and a in ids, out
    # Deleted mail is gone for good: no attempt, no bounce.
    _accept_all(sink)
    p.cli("queue", "flush", check=True)
    sink.wait_to("again@example.test", timeout=20)
    time.sleep(1)
    assert not sink.to("bin@example.test")
    assert not sink.received(lambda m: m.mail_from == ""), "delete must not bounce"


def test_selection_by_domain_sender_and_all(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    q1 = _queue_deferred(p, SENDER, "x@dom-a.test")
    q2 = _queue_deferred(p, SENDER, "y@dom-b.test")
    q3 = _queue_deferred(p, OTHER, "z@dom-b.test")
    # -d: only dom-a's message.
    assert _count(p.cli("queue", "hold", "-d", "dom-a.test", check=True)) == 1
    out = p.queue_list()[1]
    assert _entry(out, q1).startswith(q1 + "!")
    assert not _entry(out, q2).startswith(q2 + "!") and not _entry(out, q3).startswith(q3 + "!")
    # -s: only OTHER's message.
    assert _count(p.cli("queue", "hold", "-s", OTHER, check=True)) == 1
    out = p.queue_list()[1]
    assert _entry(out, q3).startswith(q3 + "!") and not _entry(out, q2).startswith(q2 + "!")
    assert _count(p.cli("queue", "release", "-d", "dom-a.test", check=True)) == 1
    assert not _entry(p.queue_list()[1], q1).startswith(q1 + "!")
    # list filters too
    ids, out = p.queue_list()
    r = p.cli("queue", "list", "-d", "dom-b.test", check=True)
    assert q2 in r.stdout and q3 in r.stdout and q1 not in r.stdout, r.stdout
    # ALL
    # q3 is still held: Postfix's postsuper counts only what it changed.
    assert _count(p.cli("queue", "hold", "ALL", check=True)) in (2, 3)
    out = p.queue_list()[1]
    assert all(_entry(out, q).startswith(q + "!") for q in (q1, q2, q3)), out
    assert _count(p.cli("queue", "release", "ALL", check=True)) == 3
    assert _count(p.cli("queue", "delete", "-s", SENDER, check=True)) == 2
    h.wait_until(lambda: p.queue_list()[0] == [q3], timeout=10, what="only %s left" % q3)
    assert _count(p.cli("queue", "requeue", "ALL", check=True)) == 1
    assert _count(p.cli("queue", "delete", "ALL", check=True)) == 1
    h.wait_until(lambda: not p.queue_list()[0], timeout=10, what="an empty queue list")
    p.wait_queue_empty(timeout=10)
    assert "Mail queue is empty" in p.cli("queue", "list", check=True).stdout


def test_queue_show_and_mailq(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    rcpt = "shown@example.test"
    qid = _queue_deferred(p, SENDER, rcpt, subject="show me", body="The body text 0815.\r\n")
    show = p.cli("queue", "show", qid, check=True).stdout
    for want in (SENDER, rcpt, "Subject: show me", "The body text 0815.", "Received:"):
        assert want in show, "%r missing from queue show:\n%s" % (want, show)
    assert p.cli("queue", "show", "0123456789ABCDEF0").returncode != 0, "show of a missing id"
    # mailq: the same program under another name lists the queue.
    r = p.run_as_argv0("mailq")
    assert r.returncode == 0, r.stderr
    assert qid in r.stdout and rcpt in r.stdout and "deferred by the test sink" in r.stdout, r.stdout


def test_ordinary_user_cannot_manage_queue(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    rcpt = "precious@example.test"
    qid = _queue_deferred(p, SENDER, rcpt)
    for args in (("queue", "delete", qid), ("queue", "hold", qid), ("queue", "flush"),
                 ("queue", "delete", "ALL"), ("queue", "requeue", qid)):
        r = p.cli_as("nobody", *args)
        assert r.returncode != 0, "%s as nobody succeeded: %s" % (" ".join(args), r.stdout)
        assert r.stderr.strip(), "no error message for %s" % " ".join(args)
    # "others may list only their own mail or nothing": nothing.
    r = p.cli_as("nobody", "queue", "list")
    assert r.returncode != 0, "nobody may not list the queue:\n" + r.stdout
    assert qid not in r.stdout and rcpt not in r.stdout
    # Nothing changed: still queued, not held.
    ids, out = p.queue_list()
    assert qid in ids and not _entry(out, qid).startswith(qid + "!"), out
    assert qid in p.queue_files()
    # The mail owner may manage the queue.
    r = p.cli_as(h.MAIL_OWNER, "queue", "hold", qid)
    assert r.returncode == 0 and _count(r) == 1, r.stderr


def test_ordinary_user_told_permission_denied(postino_factory, sink):
    p = postino_factory()
    for args in (("queue", "list"), ("queue", "delete", "ALL")):
        r = p.cli_as("nobody", *args)
        assert r.returncode != 0
        assert re.search(r"(?i)permission|denied|not allowed", r.stderr), r.stderr
        assert "is postino running" not in r.stderr, r.stderr
