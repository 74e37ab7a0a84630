"""A full queue file system (issue #12). The spool, with its Berkeley DB
index, lives on a tmpfs of 32 MB mounted by the test (root only; the
tests skip otherwise) and is filled with a plain file:

* queue_minfree: below it smtpd answers MAIL FROM with "452 4.3.1
  Insufficient system storage" (as Postfix), also when the declared SIZE=
  does not fit; once space returns mail is taken again by itself.
* the space ends while a message is received: the answer to the final dot
  is a 4xx, never a 250.
* the disk stays full while qmgr retries deferred mail, a recipient
  bounces and qmgr is killed (it rebuilds its index): no daemon crash
  loop, nothing accepted is lost or corrupted,
  and when the file is removed everything is delivered once (the DSN too).
* event_log on the full file system, and the webhook's spool on a full
  file system of its own: mail goes on as the queue's space allows, the
  events daemon warns once, lives on and leaves no partial line, and
  writes what it kept in memory (and the spool drains) once space returns.

Everything goes to the aiosmtpd sink on 127.0.0.1 (relayhost)."""
import errno
import json
import os
import pwd
import re
import smtplib
import subprocess
import time

import pytest

import postino_harness as h
from test_events import EVENTS_ROW, Webhook

SENDER = "s@sender.test"
FS_SIZE = 32 * 1024 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(spool, leave):
    """Write a filler file until only about `leave` bytes stay free (0:
    until the file system says ENOSPC). Returns the filler's path."""
    path = os.path.join(spool, "filler")
    chunk = b"\0" * 65536
    with open(path, "ab") as f:
        while True:
            room = _free(spool) - leave
            if room <= 0:
                break
            try:
                f.write(chunk[:min(len(chunk), room)])
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    return path


@pytest.fixture
def small_spool(postino_factory, sink):
    """make(leave=None, **main) -> a started Postino whose spool is a 32 MB
    tmpfs; with leave, the tmpfs is filled up to `leave` free bytes before
    postino starts (p.filler is the file)."""
    made = []

    def make(leave=None, master_extra=(), setup=None, **main):
        cf = {"relayhost": "[127.0.0.1]:%d" % sink.port,
              "local_transport": "smtp:[127.0.0.1]:%d" % sink.port}
        cf.update(main)
        p = postino_factory(main=cf, master_extra=list(master_extra), start=False)
        os.makedirs(p.spool)
        subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=%d,mode=755" % FS_SIZE,
                               "tmpfs", p.spool])
        made.append(p)
        p.mounts = [p.spool]
        if setup:
            setup(p)                       # before start: more mounts, config
        p.filler = fill(p.spool, leave) if leave is not None else None
        p.start()
        return p

    yield make
    for p in made:
        p.stop()
        for m in reversed(p.mounts):
            if subprocess.call(["umount", m]) != 0:
                subprocess.call(["umount", "-l", m])


def _mail_reply(p, size=None):
    with p.smtp() as c:
        opts = ["SIZE=%d" % size] if size is not None else []
        return c.mail(SENDER, opts)


def _daemons(p, names=("qmgr", "bounce", "delivery")):
    return {n: sorted(v) for n, v in p.pids(names).items()}


def test_queue_minfree_refuses_mail_and_resumes(small_spool, sink):
    p = small_spool(queue_minfree=str(4 * 1024 * 1024))
    qid = p.send(SENDER, "first@example.test")
    sink.wait_to("first@example.test")
    p.wait_removed(qid)

    # Below queue_minfree: 452 4.3.1 at MAIL FROM, logged as Postfix does.
    filler = fill(p.spool, 2 * 1024 * 1024)
    time.sleep(1.1)                       # smtpd measures at most once a second
    code, text = _mail_reply(p)
    assert (code, text) == (452, b"4.3.1 Insufficient system storage"), (code, text)
    p.wait_log(r"NOQUEUE: reject: MAIL from \S+: 452 4\.3\.1 Insufficient system storage; "
               r"from=<%s>" % SENDER)
    p.wait_log(r"warning: not enough free space in mail queue")
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        p.send(SENDER, "refused@example.test")
    assert e.value.smtp_code == 452

    # Above queue_minfree, but the declared SIZE= does not fit: 452 too;
    # a small declared size is taken.
    os.unlink(filler)
    filler = fill(p.spool, 5 * 1024 * 1024)
    time.sleep(1.1)
    code, _ = _mail_reply(p, size=3 * 1024 * 1024)
    assert code == 452, code
    code, _ = _mail_reply(p, size=1000)
    assert code == 250, code

    # Space returns: mail flows again without any help.
    os.unlink(filler)
    h.wait_until(lambda: _mail_reply(p)[0] == 250, timeout=20, what="MAIL taken again")
    qid = p.send(SENDER, "after@example.test")
    sink.wait_to("after@example.test")
    p.wait_removed(qid)
    assert not sink.to("refused@example.test")


def test_disk_full_during_data_is_4xx(small_spool, sink):
    p = small_spool()
    filler = fill(p.spool, 256 * 1024)
    big = "x" * 998 + "\r\n"
    body = "Subject: big\r\n\r\n" + big * 2000          # 2 MB: cannot fit
    with p.smtp() as c:
        code, _ = c.mail(SENDER)
        assert code == 250
        assert c.rcpt("big@example.test")[0] == 250
        code, text = c.data(body.encode())      # the final reply (354 came)
        assert 400 <= code < 500, (code, text)
        assert (code, text) == (451, b"4.3.0 Error: queue file write error"), (code, text)
    p.wait_log(r"queue file write error")
    os.unlink(filler)
    # nothing half-written stays behind; the next message is fine
    h.wait_until(lambda: not p.queue_files(), timeout=20, what="no queue file left")
    qid = p.send(SENDER, "small@example.test")
    sink.wait_to("small@example.test")
    p.wait_removed(qid)
    assert not sink.to("big@example.test")


def test_disk_full_keeps_accepted_mail(small_spool, sink):
    state = {"defer": True}
    sink.on_rcpt(lambda ip, rcpt: state["defer"] and rcpt.startswith("held"),
                 forever="451 4.3.0 try again later")
    sink.on_rcpt(lambda ip, rcpt: rcpt.startswith("gone"), forever="550 5.1.1 no such user")
    p = small_spool()
    bodies = {}
    for i in range(3):
        rcpt = "held%d@example.test" % i
        bodies[rcpt] = "held message %d\r\n" % i + "line of body text\r\n" * 200
        p.send(SENDER, rcpt, body=bodies[rcpt])
        p.wait_log(r"to=<%s>, .*status=deferred" % rcpt)
    daemons = _daemons(p)

    # Full to the last block: qmgr retries the deferred mail (index and
    # queue file updates fail), a new recipient bounces (bounce cannot
    # write its DSN). A message is accepted just before, then none.
    late = p.send(SENDER, "gone@example.test", body="to be bounced\r\n")
    filler = fill(p.spool, 0)
    # On a fast machine the late message may bounce, and its DSN go out,
    # before the filler reaches the last block; their removal then frees
    # space again. Let that settle and fill what it freed.
    p.wait_log(r"%s: to=<gone@example\.test>, .*status=bounced" % late, timeout=60)
    time.sleep(1)
    made = p.log_lines(r"%s: sender non-delivery notification: \w+" % late)
    if made:
        p.wait_removed(made[0].rsplit(" ", 1)[1].strip())
        p.wait_removed(late)
    fill(p.spool, 0)
    with pytest.raises(smtplib.SMTPException):
        p.send(SENDER, "nospace@example.test")
    n = len(p.log_lines(r"to=<held0@example\.test>, .*status=deferred"))
    p.wait_log(r"to=<held0@example\.test>, .*status=deferred", count=n + 2, timeout=60)
    p.wait_log(r"%s: to=<gone@example\.test>, .*status=bounced" % late, timeout=60)
    time.sleep(3)
    assert _daemons(p) == daemons, "a daemon was restarted while the disk was full"
    assert not p.log_lines(r"panic|fatal|terminated|signal \d|exit status"), \
        "\n".join(p.log_lines(r"panic|fatal|terminated|signal \d|exit status"))

    # qmgr killed while the disk is full: it rebuilds its index from the
    # queue files (the old index's blocks are freed first) and goes on.
    # The index holds the three held messages, and the late one too when
    # its DSN could not be written before the disk filled (it then waits
    # for space with its bounce still to make): whichever way the race
    # went, exactly the queue files that are there.
    index_re = r"qmgr\[\d+\]: queue index: (\d+) messages"
    before = len(p.log_lines(index_re))
    p.kill("qmgr")
    line = p.wait_log(index_re, count=before + 1, timeout=60)[-1]
    indexed = int(re.search(index_re, line).group(1))
    files = p.queue_files()
    assert indexed == len(files) and indexed in (3, 4), (indexed, files, made)
    n = len(p.log_lines(r"to=<held1@example\.test>, .*status=deferred"))
    p.wait_log(r"to=<held1@example\.test>, .*status=deferred", count=n + 1, timeout=60)
    assert not p.log_lines(r"qmgr\[\d+\]: fatal"), p.log_tail(40)
    assert len(p.log_lines(r"qmgr: back-off")) == 1, p.log_tail(40)   # the kill's

    # Space returns: every accepted message is delivered once, intact, and
    # the sender gets its one DSN.
    os.unlink(filler)
    state["defer"] = False
    for rcpt, body in bodies.items():
        sink.wait_to(rcpt, timeout=60)
    dsn = h.wait_until(lambda: sink.received(lambda m: m.mail_from == "" and SENDER in m.rcpts),
                       timeout=60, what="the DSN for gone@example.test")
    p.wait_queue_empty(timeout=60)
    time.sleep(2)
    for rcpt, body in bodies.items():
        got = sink.to(rcpt)
        assert len(got) == 1, (rcpt, len(got))
        assert body.encode().replace(b"\r\n", b"\n") in got[0].content.replace(b"\r\n", b"\n")
    assert len(sink.received(lambda m: m.mail_from == "" and SENDER in m.rcpts)) == 1, dsn
    assert not sink.to("nospace@example.test")
    qid = p.send(SENDER, "after@example.test")
    sink.wait_to("after@example.test")
    p.wait_removed(qid)


def test_start_on_a_nearly_full_disk(small_spool, sink):
    """The suppression list's shared Berkeley DB regions (12 MB) do not fit
    in what is left: qmgr used to create them sparse and die of SIGBUS on
    the first page it touched, again at every restart. Now the open fails
    with ENOSPC, qmgr carries on without the list (and opens it later),
    and mail flows."""
    p = small_spool(leave=256 * 1024)
    qid = p.send(SENDER, "tight@example.test")
    sink.wait_to("tight@example.test")
    p.wait_removed(qid)
    p.wait_log(r"qmgr\[\d+\]: .*suppression list .*: No space left on device")
    daemons = _daemons(p)
    time.sleep(2)
    assert _daemons(p) == daemons
    bad = p.log_lines(r"panic|fatal|terminated|signal \d|exit status|back-off")
    assert not bad, "\n".join(bad)
    os.unlink(p.filler)
    qid = p.send(SENDER, "roomy@example.test")
    sink.wait_to("roomy@example.test")
    p.wait_removed(qid)


# -- the event log and the webhook's spool on a full file system

def _events(path):
    """Every line of an event log, parsed: a partial or corrupt line fails
    here (json raises)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    assert not text or text.endswith("\n"), "a partial last line: %r" % text[-200:]
    return [json.loads(ln) for ln in text.split("\n") if ln]


def _events_to(events, rcpt, type_):
    return [e for e in events if e.get("recipient") == rcpt and e["type"] == type_]


def test_event_log_on_a_full_disk(small_spool, sink):
    """event_log on the queue's file system. While it is full: smtpd
    answers 452, the deferred mail is retried, the events daemon logs one
    warning, keeps the events in memory and leaves no partial line; once
    the space returns it writes them, in order, and the new ones after."""
    state = {"defer": True}
    sink.on_rcpt(lambda ip, rcpt: state["defer"] and rcpt.startswith("held"),
                 forever="451 4.3.0 try again later")

    def setup(p):
        p.set(event_log=os.path.join(h.mail_owner_dir(os.path.join(p.spool, "evlog")),
                                     "events.json"))

    p = small_spool(master_extra=[EVENTS_ROW], setup=setup)
    log = p.main["event_log"]
    # Ten deferred messages: each retry round makes ten transient_failure
    # events, more than the slack in the log file's last page.
    held = ["held%d@example.test" % i for i in range(10)]
    for rcpt in held:
        p.send(SENDER, rcpt)
    for rcpt in held:
        p.wait_log(r"to=<%s>, .*status=deferred" % rcpt)
    h.wait_until(lambda: all(_events_to(_events(log), r, "transient_failure") for r in held),
                 timeout=30, what="the first transient_failure events")
    daemons = _daemons(p, ("qmgr", "events"))

    filler = fill(p.spool, 0)
    time.sleep(1.1)                       # smtpd measures at most once a second
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        p.send(SENDER, "nospace@example.test")
    assert e.value.smtp_code == 452, e.value
    p.wait_log(r"events\[\d+\]: warning: cannot write event_log %s: No space left on device"
               % re.escape(log), timeout=90)
    n = len(p.log_lines(r"to=<held0@example\.test>, .*status=deferred"))
    p.wait_log(r"to=<held0@example\.test>, .*status=deferred", count=n + 2, timeout=60)
    assert len(p.log_lines(r"cannot write event_log")) == 1, \
        "\n".join(p.log_lines(r"cannot write event_log"))
    _events(log)                          # no partial or corrupt line
    assert _daemons(p, ("qmgr", "events")) == daemons, \
        "a daemon was restarted while the disk was full"
    bad = p.log_lines(r"panic|fatal|terminated|signal \d|exit status|back-off")
    assert not bad, "\n".join(bad)

    # Space returns: the events kept in memory are written, then new ones.
    os.unlink(filler)
    state["defer"] = False
    for rcpt in held:
        sink.wait_to(rcpt, timeout=60)
    qid = p.send(SENDER, "after@example.test")
    sink.wait_to("after@example.test")
    p.wait_removed(qid)
    line = p.wait_log(r"event_log %s takes events again: (\d+) written late, 0 dropped"
                      % re.escape(log))[0]
    assert int(re.search(r"(\d+) written late", line).group(1)) >= 1, line
    h.wait_until(lambda: _events_to(_events(log), "after@example.test", "delivery"),
                 timeout=30, what="the delivery event of a message sent afterwards")
    events = _events(log)
    for rcpt in held:
        # every retry's event is there (none lost), and the delivery
        deferred = len(p.log_lines(r"to=<%s>, .*status=deferred" % re.escape(rcpt)))
        assert len(_events_to(events, rcpt, "transient_failure")) == deferred, rcpt
        assert len(_events_to(events, rcpt, "delivery")) == 1, rcpt
    assert _daemons(p, ("qmgr", "events")) == daemons


def test_webhook_spool_on_a_full_disk(small_spool, sink):
    """The webhook's spool (queue_directory/events) on a file system of its
    own that fills up while mail flows: mail is still taken and delivered,
    the events daemon logs one warning and lives on, and once the space
    returns the events kept in memory are spooled and POSTed and the spool
    drains."""
    hook = Webhook().start()
    try:
        def setup(p):
            evdir = os.path.join(p.spool, "events")
            os.makedirs(evdir)
            pw = pwd.getpwnam(h.MAIL_OWNER)
            subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=1m,mode=700,uid=%d,gid=%d"
                                   % (pw.pw_uid, pw.pw_gid), "tmpfs", evdir])
            p.mounts.append(evdir)
            p.evdir = evdir

        p = small_spool(master_extra=[EVENTS_ROW], setup=setup,
                        event_webhook_url="http://127.0.0.1:%d/hook" % hook.port)
        first = p.send(SENDER, "first@example.test")
        h.wait_until(lambda: [ln for ln in hook.received()
                              if first in ln and '"delivery"' in ln],
                     timeout=30, what="the first delivery event at the webhook")
        h.wait_until(lambda: not os.listdir(p.evdir), timeout=30, what="the spool drained")
        daemons = _daemons(p, ("qmgr", "events"))

        filler = fill(p.evdir, 0)
        rcpts = ["full%d@example.test" % i for i in range(20)]
        for rcpt in rcpts:
            p.send(SENDER, rcpt)          # the queue has room: taken
        for rcpt in rcpts:
            sink.wait_to(rcpt, timeout=60)
        p.wait_log(r"events\[\d+\]: warning: cannot write the webhook spool \S+: "
                   r"No space left on device", timeout=30)
        time.sleep(2)
        assert len(p.log_lines(r"cannot write the webhook spool")) == 1
        assert _daemons(p, ("qmgr", "events")) == daemons, \
            "a daemon was restarted while the spool was full"
        bad = p.log_lines(r"panic|fatal|terminated|signal \d|exit status|back-off")
        assert not bad, "\n".join(bad)

        os.unlink(filler)
        line = p.wait_log(r"webhook spool events takes events again: \d+ written late, "
                          r"0 dropped", timeout=30)[0]
        assert int(re.search(r"(\d+) written late", line).group(1)) >= 1, line
        for rcpt in rcpts:
            h.wait_until(lambda: [ln for ln in hook.received()
                                  if rcpt in ln and '"delivery"' in ln],
                         timeout=30, what="the delivery event of %s at the webhook" % rcpt)
        h.wait_until(lambda: not [f for f in os.listdir(p.evdir) if f.startswith("B")],
                     timeout=30, what="the webhook spool drained")
        for ln in hook.received():
            json.loads(ln)                # every line whole
        assert _daemons(p, ("qmgr", "events")) == daemons
    finally:
        hook.stop()
