"""Crash safety: kill -9 of daemons while mail flows loses nothing that was
acknowledged with 250 (at-least-once); master restarts killed daemons; the
queue index is rebuilt from the files after an unclean stop."""
import os
import random
import signal
import smtplib
import threading
import time
import uuid

import pytest

import postino_harness as h

SENDER = "s@sender.test"
KILLABLE = ("smtpd", "qmgr", "delivery", "bounce")


def test_smtpd_restarted_by_master(relay_postino, sink):
    p = relay_postino
    old = set(p.pids(("smtpd",)).get("smtpd", []))
    assert old, "no smtpd process found for this instance"
    p.kill("smtpd")
    h.wait_until(lambda: set(p.pids(("smtpd",)).get("smtpd", [])) - old,
                 timeout=20, what="a new smtpd process")
    p.wait_smtp(20)
    qid = p.send(SENDER, "after-restart@example.test")
    sink.wait_to("after-restart@example.test")
    p.wait_removed(qid)
    assert p.cli("status").returncode == 0


def test_index_rebuilt_after_kill(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
    sink.on_rcpt("later@example.test", forever="451 4.3.0 come back later")
    qid = p.send(SENDER, "later@example.test")
    p.wait_log(r"%s: to=<later@example.test>, .*status=deferred" % qid)
    ids, _ = p.queue_list()
    assert qid in ids
    p.kill_all()                       # everything, master included: unclean
    assert not p.pids()
    p.start()
    ids, out = h.wait_until(lambda: (lambda r: r if qid in r[0] else None)(p.queue_list(check=False)),
                            timeout=20, what="%s in queue list after restart" % qid)
    assert qid in ids, out


class _Load:
    """Parallel smtplib clients; records every Message-ID acknowledged with 250."""

    def __init__(self, port, total, threads):
        self.port, self.total, self.threads = port, total, threads
        self.lock = threading.Lock()
        self.next = 0
        self.acked = {}            # msgid -> qid
        self.errors = 0

    def _take(self):
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next - 1

    def _worker(self):
        n = self._take()
        s = None
        while n is not None:
            msgid = "<crash-%d-%s@it.postino.test>" % (n, uuid.uuid4().hex[:8])
            rcpt = "r%d@example.test" % (n % 50)
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
                    s.ehlo("load.test")
                qid = h.Postino.send(None, SENDER, [rcpt], msgid=msgid, conn=s)
                with self.lock:
                    self.acked[msgid] = qid
                n = self._take()
            except (OSError, smtplib.SMTPException, AssertionError):
                with self.lock:
                    self.errors += 1
                try:
                    if s:
                        s.close()
                except OSError:
                    pass
                s = None
                time.sleep(0.05)   # retry the same message (new Message-ID)
        if s:
            try:
                s.quit()
            except (OSError, smtplib.SMTPException):
                pass

    def run(self):
        ts = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.threads)]
        for t in ts:
            t.start()
        return ts


def _killer(p, stop, load, log):
    """Random kill -9 of one daemon every few hundred ms; once, halfway,
    everything at once (master too), then `postino start` again."""
    everything_done = False
    while not stop.is_set():
        time.sleep(random.uniform(0.1, 0.4))
        if not everything_done and len(load.acked) >= load.total // 2:
            everything_done = True
            p.kill_all()
            log.append("killed everything")
            time.sleep(0.5)
            r = p.cli("start", timeout=30)
            log.append("restart rc=%d %s" % (r.returncode, r.stderr.strip()))
            continue
        name = random.choice(KILLABLE)
        pids = p.pids((name,)).get(name, [])
        if pids:
            victim = random.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
                log.append("killed %s[%d]" % (name, victim))
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_no_acknowledged_mail_lost_under_kill9(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port})
    total = 2000
    load = _Load(p.port, total, threads=16)
    stop = threading.Event()
    killlog = []
    killer = threading.Thread(target=_killer, args=(p, stop, load, killlog), daemon=True)
    t0 = time.time()
    threads = load.run()
    killer.start()
    for t in threads:
        t.join(timeout=max(1, 75 - (time.time() - t0)))
    # Keep killing while the queue drains, until enough kills happened.
    h.wait_until(lambda: len(killlog) >= 30 or time.time() - t0 > 25, timeout=30,
                 what="kill events")
    stop.set()
    killer.join(30)
    assert "killed everything" in killlog, killlog
    assert len(load.acked) >= total * 0.9, "only %d/%d acknowledged in time (%d errors)" % (
        len(load.acked), total, load.errors)
    # Make sure the system is up (the master restarts its children itself).
    if p.cli("status").returncode != 0:
        p.cli("start", check=True)
    acked = dict(load.acked)

    def missing():
        got = {m.msg.get("Message-ID") for m in sink.received(lambda m: m.mail_from == SENDER)}
        dsns = [m.content.decode(errors="replace") for m in sink.received(lambda m: m.mail_from == "")]
        bounced = {mid for mid in acked if any(mid in d for d in dsns)} if dsns else set()
        return set(acked) - got - bounced

    print("crash test: %d acknowledged, %d client errors, %d kill events: %s" % (
        len(acked), load.errors, len(killlog), killlog[:3] + ["..."] + killlog[-3:]))
    try:
        h.wait_until(lambda: not missing(), timeout=max(30, 115 - (time.time() - t0)),
                     interval=1, what="every acknowledged message at the sink")
    except TimeoutError:
        lost = sorted(missing())
        pytest.fail("%d of %d acknowledged messages never arrived, e.g. %s (queue ids %s); kills: %s"
                    % (len(lost), len(acked), lost[:5], [acked[x] for x in lost[:5]], killlog[-10:]))



def _incomplete_files(p):
    """Queue files not (yet) marked complete (no owner-execute bit)."""
    out = []
    for root, _, files in os.walk(os.path.join(p.spool, "queue")):
        for f in files:
            try:
                if not os.stat(os.path.join(root, f)).st_mode & 0o100:
                    out.append(f)
            except FileNotFoundError:
                pass
    return out


def _open_data(p, rcpt, first):
    s = p.smtp()
    s.mail(SENDER)
    s.rcpt(rcpt)
    assert s.docmd("DATA")[0] == 354
    s.send(first)
    return s


def test_incomplete_file_of_a_killed_smtpd_is_removed(relay_postino, sink):
    """smtpd killed mid-DATA leaves a half-written file no one will ever
    complete: qmgr's spool scan removes it within seconds (the writer's
    lock died with it), not an hour later. A live but slow client's file,
    as old, stays; its message is accepted and delivered."""
    p = relay_postino
    # a live writer first: its file outlives the sweep's grace period
    slow = _open_data(p, "slow@example.test", b"Subject: slow\r\n\r\nfirst part\r\n")
    slow_file = h.wait_until(lambda: _incomplete_files(p), timeout=10, what="the slow client's file")[0]
    time.sleep(8)                      # > 5 s grace + a scan (queue_run_delay 1s)
    assert slow_file in _incomplete_files(p), "a live writer's file was removed"
    slow.send(b"second part\r\n.\r\n")
    code, resp = slow.getreply()
    assert code == 250, resp
    slow.quit()
    sink.wait_to("slow@example.test")

    # now a writer that dies mid-DATA
    doomed = _open_data(p, "doomed@example.test",
                        b"Subject: doomed\r\n\r\n" + b"x" * 70000 + b"\r\n")
    doomed_file = h.wait_until(lambda: _incomplete_files(p), timeout=10, what="the doomed file")[0]
    p.kill("smtpd")
    doomed.close()
    p.wait_log(r"%s: removed an incomplete queue file left by a writer that died" % doomed_file,
               timeout=30)
    assert not _incomplete_files(p)
    p.wait_smtp(20)
    assert not sink.to("doomed@example.test")
