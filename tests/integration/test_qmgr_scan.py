"""qmgr with many queued messages (issue #12): the control CLI answers
while qmgr rebuilds its index after a crash (the rebuild runs in slices
on qmgr's loop and "queue stats" reports its progress), and deliveries
that fail together suspend their destination with one log line."""
import asyncio
import re
import subprocess
import time

import postino_harness as h

SENDER = "s@sender.test"


def _deferred_template(p, rcpt):
    """One message deferred for an hour: the file the clones copy."""
    qid = p.send(SENDER, rcpt)
    p.wait_log(r"%s: to=<%s>, .*status=deferred" % (qid, re.escape(rcpt)))
    return qid


def test_stats_answers_during_rebuild(postino_factory):
    """kill -9, then a start that rebuilds the index from 30,000 files:
    `queue stats` answers while the rebuild runs, saying how far it is,
    and once it is done it counts every message."""
    n = 30000
    port = h.free_port()  # nothing listens: every attempt is deferred
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % port,
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h",
                              "queue_run_delay": "1h"})
    qid = _deferred_template(p, "far@example.test")
    p.clone_queue_file(qid, n - 1)
    p.kill_all()
    done_rx = r"qmgr\[\d+\]: queue index: \d+ messages"
    starts = len(p.log_lines(done_rx))
    p.start()
    p.wait_log(r"rebuilding it from the queue files")
    answers = []
    # Until qmgr says it is done (it counts its index at the end of every
    # start-up scan), or two minutes on a very slow machine.
    deadline = time.monotonic() + 120
    while len(p.log_lines(done_rx)) == starts and time.monotonic() < deadline:
        try:
            r = p.cli("queue", "stats", timeout=5)
        except subprocess.TimeoutExpired:
            r = None  # the loop busy with the whole rebuild: the bug
        assert r is not None and r.returncode == 0, \
            "queue stats did not answer during the rebuild: %r" % (r and r.stderr)
        answers.append(r.stdout)
    during = [a for a in answers if a.startswith("rebuilding: ")]
    assert during, "no answer said the rebuild was running: %r" % answers[:3]
    scanned = [int(re.match(r"rebuilding: (\d+) files scanned", a).group(1)) for a in during]
    assert scanned == sorted(scanned) and scanned[-1] <= n, scanned
    p.wait_log(r"queue index: %d messages" % n, timeout=60)
    r = p.cli("queue", "stats", check=True)
    assert "rebuilding" not in r.stdout, r.stdout
    assert re.search(r"^total\s+%d$" % n, r.stdout, re.M), r.stdout
    assert p.log_lines(r"queue index rebuilt: %d queue files read" % n)


class _DropTogether(h.AsyncServers):
    """Accepts connections without a greeting and holds them until `want`
    are open (or 15 s passed), then closes them all at once: that many
    deliveries fail at the same moment."""

    def __init__(self, port, want):
        super().__init__(port, {"mx": ("127.0.0.1", None)})
        self.want = want
        self.held = 0
        self.go = None

    async def session(self, key, script, reader, writer):
        if self.go is None:
            self.go = asyncio.Event()
        self.held += 1
        if self.held >= self.want:
            self.go.set()
        try:
            await asyncio.wait_for(self.go.wait(), 15)
        except asyncio.TimeoutError:
            self.go.set()
        writer.close()


def test_concurrent_failures_one_suspended_line(postino_factory):
    """Ten deliveries to one destination fail at once (connection lost
    before the greeting): one "destination ... suspended" line says it,
    not ten; every message is deferred."""
    k = 10
    port = h.free_port()
    srv = _DropTogether(port, k).start()
    try:
        p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % port,
                                  "initial_destination_concurrency": str(k),
                                  "default_destination_concurrency_limit": str(k),
                                  "destination_suspend_time": "1h",
                                  "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
        s = p.smtp()
        try:
            ids = [p.send(SENDER, "r%d@example.test" % i, conn=s) for i in range(k)]
        finally:
            s.quit()
        for qid in ids:
            p.wait_log(r"%s: to=<r\d+@example\.test>, .*status=deferred" % qid, timeout=40)
        assert srv.held == k, "the %d deliveries did not run together (%d)" % (k, srv.held)
        # qmgr hears of the results after the agent logged them: wait for
        # its line, then give any second one the time to show up.
        p.wait_log(r"destination smtp:\S+ suspended for ", timeout=20)
        time.sleep(1)
        lines = p.log_lines(r"destination smtp:\S+ suspended for ")
        assert len(lines) == 1, lines
    finally:
        srv.stop()
