"""The suppression list (issue #8): `postino suppress` add/list/remove/
import/export through qmgr, a hard bounce that suppresses its recipient so
the next message is not sent to it (no second DSN either), RCPT refused
for authenticated senders with smtpd_reject_suppressed, expiry and
scopes."""
import csv
import io
import os
import re
import smtplib
import time

import pytest

import postino_harness as h
from test_smtpd_policy import HOST, PASSWORD, sasldb  # noqa: F401 (a fixture)

SENDER = "s@sender.test"
DEAD = "dead@example.test"


def _dsns(sink, sender=SENDER):
    return sink.received(lambda m: m.mail_from == "" and sender in [r.lower() for r in m.rcpts])


def _rcpts_seen(sink, rcpt):
    return [x for x in sink.rcpt_log if x[1].lower() == rcpt.lower()]


def _listed(p, *args):
    r = p.cli("suppress", "list", *args, check=True)
    return [ln.split() for ln in r.stdout.splitlines()[1:-1]], r.stdout


def _wait_qmgr(p):
    """The control socket answers once qmgr is up."""
    h.wait_until(lambda: p.cli("suppress", "list").returncode == 0, what="qmgr's control socket")


def test_cli_add_list_remove(relay_postino):
    p = relay_postino
    _wait_qmgr(p)
    r = p.cli("suppress", "list", check=True)
    assert r.stdout.strip() == "-- 0 entries", r.stdout
    p.cli("suppress", "add", "Someone@Example.TEST", "--reason", "complaint", "--text", "FBL report",
          check=True)
    p.cli("suppress", "add", "x@example.test", "--scope", "News.Sender.TEST",
          "--expires", "2999-01-01", check=True)
    rows, out = _listed(p)
    assert out.splitlines()[-1] == "-- 2 entries"
    # global entries sort first; the address is kept lower-cased
    assert rows[0][:3] == ["someone@example.test", "(global)", "complaint"], out
    assert rows[0][4:] == ["never", "FBL", "report"], out
    assert rows[1][:3] == ["x@example.test", "news.sender.test", "manual"], out
    assert rows[1][4] == "2999-01-01", out
    # one scope only
    rows, out = _listed(p, "--scope", "news.sender.test")
    assert [r[0] for r in rows] == ["x@example.test"], out
    # bad input is refused with a reason, nothing is added
    r = p.cli("suppress", "add", "not-an-address")
    assert r.returncode == 1 and "invalid address" in r.stderr, r.stderr
    r = p.cli("suppress", "add", "a@example.test", "--reason", "whatever")
    assert r.returncode == 1 and "invalid reason" in r.stderr, r.stderr
    r = p.cli("suppress", "add", "a@example.test", "--expires", "soonish")
    assert r.returncode == 1 and "invalid --expires" in r.stderr, r.stderr
    # remove: the scope is part of the key
    r = p.cli("suppress", "remove", "x@example.test")
    assert r.returncode == 1 and "not on the suppression list" in r.stderr
    p.cli("suppress", "remove", "x@example.test", "--scope", "news.sender.test", check=True)
    p.cli("suppress", "remove", "SOMEONE@example.test", check=True)
    assert p.cli("suppress", "list", check=True).stdout.strip() == "-- 0 entries"
    assert p.log_lines(r"suppression list: added <someone@example.test> \(complaint, global\)")


def test_cli_import_export_roundtrip(relay_postino, workdir):
    p = relay_postino
    _wait_qmgr(p)
    src = os.path.join(workdir, "in.csv")
    with open(src, "w") as f:
        f.write("Address,Scope,Reason,Added,Expires,Text\n"
                "a@example.test,,bad-mailbox,2026-01-02,,\"550 5.1.1 no, really\"\n"
                "b@example.test,sender.test,complaint,2026-01-03T10:00:00Z,2999-12-31,\"said \"\"stop\"\"\"\n"
                "not an address,,manual,,,\n"
                "c@example.test\n")
    r = p.cli("suppress", "import", src)
    assert r.returncode == 1, (r.stdout, r.stderr)   # one line skipped
    assert "line 4: invalid address; skipped" in r.stderr, r.stderr
    assert "3 entries imported, 1 skipped" in r.stdout, r.stdout
    # more than one import batch (1000) and more than one list page (1000)
    many = os.path.join(workdir, "many.csv")
    with open(many, "w") as f:          # no header: the columns in their order
        for i in range(2500):
            f.write("user%04d@bulk.test,,manual\n" % i)
    r = p.cli("suppress", "import", many, check=True)
    assert "2500 entries imported, 0 skipped" in r.stdout
    out = os.path.join(workdir, "out.csv")
    r = p.cli("suppress", "export", out, check=True)
    assert "2503 entries exported" in r.stderr, r.stderr
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["address", "scope", "reason", "added", "expires", "text"]
    by = {(row[0], row[1]): row for row in rows[1:]}
    assert len(by) == 2503
    assert by[("a@example.test", "")] == ["a@example.test", "", "bad-mailbox",
                                          "2026-01-02T00:00:00Z", "", "550 5.1.1 no, really"]
    assert by[("b@example.test", "sender.test")] == [
        "b@example.test", "sender.test", "complaint", "2026-01-03T10:00:00Z",
        "2999-12-31T00:00:00Z", 'said "stop"']
    assert by[("c@example.test", "")][2] == "manual"
    # what was exported imports again unchanged
    p.cli("suppress", "remove", "a@example.test", check=True)
    p.cli("suppress", "remove", "b@example.test", "--scope", "sender.test", check=True)
    r = p.cli("suppress", "import", out, check=True)
    assert "2503 entries imported" in r.stdout
    r = p.cli("suppress", "export", check=True)          # to standard output
    assert list(csv.reader(io.StringIO(r.stdout))) == rows


def test_import_export_progress_on_a_terminal(relay_postino, workdir):
    """With stderr on a terminal, import shows how many entries qmgr took
    after each batch of 1,000 and export each page of 1,000, on one line
    redrawn with \\r; the counts end on their own lines. Off a terminal
    nothing but the count."""
    from test_queue_shape import _run_on_tty
    p = relay_postino
    _wait_qmgr(p)
    many = os.path.join(workdir, "many.csv")
    with open(many, "w") as f:
        for i in range(2500):
            f.write("user%04d@bulk.test,,manual\n" % i)
    rc, out, tty = _run_on_tty(p, "suppress", "import", many)
    assert rc == 0, tty
    assert out == "postino: 2500 entries imported, 0 skipped\n", out
    # the terminal turns \n into \r\n
    assert tty == b"\rimported 1000\rimported 2000\rimported 2500\r\n", tty
    rc, out, tty = _run_on_tty(p, "suppress", "export", os.path.join(workdir, "out.csv"))
    assert rc == 0 and out == "", out
    assert tty == b"\rexported 1000\rexported 2000\r\npostino: 2500 entries exported\r\n", tty
    r = p.cli("suppress", "import", many, check=True)
    assert (r.stdout, r.stderr) == ("postino: 2500 entries imported, 0 skipped\n", "")


def test_import_long_text_is_cut(relay_postino, workdir):
    """A text longer than the list keeps (1000 bytes) is cut, not sent
    whole (it would exceed the record protocol's line limit)."""
    p = relay_postino
    _wait_qmgr(p)
    src = os.path.join(workdir, "long.csv")
    with open(src, "w") as f:
        f.write("address,text\nlong@example.test,%s\n" % ("x" * 70000))
    r = p.cli("suppress", "import", src, check=True)
    assert "1 entry imported, 0 skipped" in r.stdout, r.stdout
    rows = list(csv.reader(io.StringIO(p.cli("suppress", "export", check=True).stdout)))
    assert rows[1][0] == "long@example.test" and rows[1][5] == "x" * 1000


def test_hard_bounce_suppresses_next_message(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt(DEAD, forever="550 5.1.1 <%s>: Recipient address rejected: User unknown" % DEAD)
    q1 = p.send(SENDER, [DEAD, "live1@example.test"], subject="first")
    sink.wait_to("live1@example.test")
    p.wait_log(r"%s: to=<%s>, added to the suppression list \(bad-mailbox, global\)" % (q1, DEAD))
    p.wait_removed(q1)
    sink.wait_for(lambda m: m.mail_from == "" and SENDER in m.rcpts)   # the first DSN
    assert len(_rcpts_seen(sink, DEAD)) == 1
    rows, out = _listed(p)
    assert rows[0][:3] == [DEAD, "(global)", "bad-mailbox"], out

    # the next message to it is not sent, the log says why, no DSN for it
    q2 = p.send(SENDER, [DEAD.upper(), "live2@example.test"], subject="second")
    sink.wait_to("live2@example.test")
    p.wait_removed(q2)
    line = p.wait_log(r"%s: to=<%s>, relay=none, .*dsn=5\.7\.1, status=bounced "
                      r"\(recipient suppressed: bad-mailbox since \d{4}-\d\d-\d\d \(.*550 5\.1\.1"
                      % (q2, re.escape(DEAD.upper())))
    assert line
    assert len(_rcpts_seen(sink, DEAD)) == 1, "the suppressed address was tried again"
    # a message whose only recipient is suppressed goes away without a word
    q3 = p.send(SENDER, [DEAD], subject="third")
    p.wait_removed(q3)
    time.sleep(1.5)   # a DSN would be on its way by now
    assert len(_dsns(sink)) == 1, "only the first message may bounce"
    assert len(_rcpts_seen(sink, DEAD)) == 1


def test_suppressed_recipient_no_dsn_after_restart(relay_postino, sink):
    """The no-DSN mark is in the queue file: a qmgr that dies before the
    message is finished does not bounce it after a restart."""
    p = relay_postino
    _wait_qmgr(p)
    p.cli("suppress", "add", DEAD, "--reason", "bad-mailbox", check=True)
    sink.on_rcpt("later@example.test", ["451 4.3.0 not now"])
    q = p.send(SENDER, [DEAD, "later@example.test"], subject="restart")
    p.wait_log(r"%s: to=<%s>, .*status=bounced \(recipient suppressed" % (q, DEAD))
    p.wait_log(r"%s: to=<later@example.test>, .*status=deferred" % q)
    p.kill("qmgr")                           # master starts another one
    sink.wait_to("later@example.test", timeout=40)
    p.wait_removed(q, timeout=40)
    time.sleep(1.5)
    assert not _dsns(sink)
    assert not _rcpts_seen(sink, DEAD)


def test_expiry_and_scope(relay_postino, sink):
    p = relay_postino
    _wait_qmgr(p)
    p.cli("suppress", "add", "brief@example.test", "--expires", "3s", check=True)
    p.cli("suppress", "add", "scoped@example.test", "--scope", "other.test", check=True)
    q1 = p.send(SENDER, ["brief@example.test", "scoped@example.test"])
    sink.wait_to("scoped@example.test")     # other.test's entry does not hold for sender.test
    p.wait_log(r"%s: to=<brief@example.test>, .*status=bounced \(recipient suppressed: manual"
               % q1)
    q2 = p.send("news@Other.TEST", ["scoped@example.test"])
    p.wait_log(r"%s: to=<scoped@example.test>, .*status=bounced \(recipient suppressed" % q2)
    # once expired, the entry is no match (and no longer listed)
    h.wait_until(lambda: "brief@" not in p.cli("suppress", "list").stdout, timeout=10,
                 what="the entry to expire")
    p.send(SENDER, ["brief@example.test"])
    sink.wait_to("brief@example.test")
    assert len(sink.to("scoped@example.test")) == 1


def test_suppression_scope_sender_domain(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "suppression_scope": "sender_domain",
                              "suppression_expiry": "30d"})
    sink.on_rcpt(DEAD, forever="550 5.1.1 <%s>: user unknown" % DEAD)
    q = p.send(SENDER, [DEAD])
    p.wait_log(r"%s: to=<%s>, added to the suppression list \(bad-mailbox, sender\.test\)"
               % (q, DEAD))
    rows, out = _listed(p)
    assert rows[0][:3] == [DEAD, "sender.test", "bad-mailbox"], out
    assert rows[0][4] != "never", out          # suppression_expiry applies
    # another sender domain still mails it
    p.send("x@else.test", [DEAD])
    h.wait_until(lambda: len(_rcpts_seen(sink, DEAD)) == 2, what="a second attempt")


@pytest.fixture
def auth_postino(postino_factory, sink, sasldb):  # noqa: F811
    main = {"relayhost": "[127.0.0.1]:%d" % sink.port, "smtpd_tls_auth_only": "no",
            "smtpd_reject_suppressed": "yes", "smtpd_sasl_local_domain": HOST}
    main.update(sasldb)
    return postino_factory(main=main)


def test_smtpd_reject_suppressed_authenticated(auth_postino, sink):
    p = auth_postino
    _wait_qmgr(p)
    p.cli("suppress", "add", DEAD, "--reason", "bad-mailbox", check=True)
    s = p.smtp()
    s.login("user", PASSWORD)
    assert s.mail(SENDER)[0] == 250
    code, text = s.rcpt(DEAD.upper())
    assert code == 550, text
    assert re.match(r"5\.7\.1 <%s>: Recipient address rejected: suppressed \(bad-mailbox since "
                    r"\d{4}-\d\d-\d\d\)$" % re.escape(DEAD.upper()), text.decode()), text
    assert s.rcpt("fine@example.test")[0] == 250
    s.quit()
    assert p.log_lines(r"NOQUEUE: reject: RCPT from .*: 550 5\.7\.1 <%s>: .*suppressed.*"
                       r"from=<%s> to=<%s>" % (re.escape(DEAD.upper()), SENDER,
                                               re.escape(DEAD.upper())))
    # not authenticated (mynetworks): accepted, then dropped by qmgr
    q = p.send(SENDER, [DEAD])
    p.wait_log(r"%s: to=<%s>, .*status=bounced \(recipient suppressed" % (q, DEAD))
    # when the entry goes, the authenticated sender may mail it again
    p.cli("suppress", "remove", DEAD, check=True)
    s = p.smtp()
    s.login("user", PASSWORD)
    s.mail(SENDER)
    assert s.rcpt(DEAD)[0] == 250
    s.quit()


def test_smtpd_broken_store_answers_451(auth_postino):
    p = auth_postino
    _wait_qmgr(p)
    p.cli("suppress", "add", DEAD, check=True)
    p.stop()
    db = os.path.join(p.spool, "suppress", "suppress.db")
    with open(db, "r+b") as f:              # not a Berkeley DB file any more
        f.write(b"\0garbage" * 512)
    for name in os.listdir(os.path.dirname(db)):
        if name.startswith("__db."):
            os.unlink(os.path.join(os.path.dirname(db), name))
    p.start()
    s = p.smtp()
    s.login("user", PASSWORD)
    s.mail(SENDER)
    code, text = s.rcpt(DEAD)
    assert code == 451 and text.startswith(b"4.3.0"), (code, text)
    s.quit()
    assert p.log_lines(r"smtpd\[\d+\]: .*suppression list .*suppress")
