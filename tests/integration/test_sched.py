"""qmgr's scheduler against the real daemons: the per-destination
concurrency limit, the per-delivery recipient limit, suspension of a
destination that refuses connections, and the lifetime of undeliverable
bounces. The receiving side is an aiosmtpd server on 127.0.0.1 with a
random port that records every transaction (and can hold DATA open to
make concurrency visible); postino reaches it through relayhost."""
import asyncio
import re
import threading
import time

from aiosmtpd.controller import Controller

import postino_harness as h

SENDER = "s@sender.test"


class _TxHandler:
    def __init__(self, rec):
        self.rec = rec

    async def handle_DATA(self, server, session, envelope):
        rec = self.rec
        with rec.lock:
            rec.active += 1
            rec.max_active = max(rec.max_active, rec.active)
        try:
            if rec.hold:
                await asyncio.sleep(rec.hold)
        finally:
            with rec.lock:
                rec.active -= 1
                rec.tx.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Ok: held %.1fs" % rec.hold


class TxSink:
    """One aiosmtpd server on 127.0.0.1: records (mail_from, rcpts) per
    transaction and the largest number of DATA phases open at once (each
    is held `hold` seconds before the 250)."""

    def __init__(self, hold=0.0, port=None):
        self.hold = hold
        self.port = port or h.free_port()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.tx = []
        self.ctl = None

    def start(self):
        self.ctl = Controller(_TxHandler(self), hostname="127.0.0.1", port=self.port,
                              ready_timeout=5, decode_data=False,
                              server_hostname="txsink.test", data_size_limit=0)
        self.ctl.start()
        return self

    def stop(self):
        if self.ctl:
            self.ctl.stop()
            self.ctl = None

    def transactions(self):
        with self.lock:
            return list(self.tx)

    def rcpts(self):
        return [r for _, rs in self.transactions() for r in rs]

    def wait_rcpts(self, n, timeout=30):
        return h.wait_until(lambda: len(self.rcpts()) >= n, timeout=timeout,
                            what="%d recipient(s) at the test server" % n)


def _relay(port, **extra):
    main = {"relayhost": "[127.0.0.1]:%d" % port}
    main.update({k: str(v) for k, v in extra.items()})
    return main


def _send_many(p, n, rcpt_fmt):
    """n messages over one SMTP session, so they are queued together."""
    s = p.smtp()
    try:
        return [p.send(SENDER, rcpt_fmt % i, conn=s) for i in range(n)]
    finally:
        s.quit()


def _max_concurrency(postino_factory, limit, n=10):
    srv = TxSink(hold=1.0).start()
    try:
        p = postino_factory(main=_relay(srv.port, default_destination_concurrency_limit=limit))
        _send_many(p, n, "c%d@example.test")
        srv.wait_rcpts(n, timeout=40)
        p.wait_queue_empty()
        return srv.max_active
    finally:
        srv.stop()


def test_destination_concurrency_limit_2(postino_factory):
    assert _max_concurrency(postino_factory, 2) == 2


def test_destination_concurrency_limit_5(postino_factory):
    assert _max_concurrency(postino_factory, 5) > 2


def test_destination_recipient_limit(postino_factory):
    srv = TxSink().start()
    try:
        p = postino_factory(main=_relay(srv.port, default_destination_recipient_limit=3))
        rcpts = ["r%d@example.test" % i for i in range(7)]
        qid = p.send(SENDER, rcpts)
        srv.wait_rcpts(7)
        p.wait_removed(qid)
        tx = srv.transactions()
        assert sorted(len(rs) for _, rs in tx) == [1, 3, 3], tx
        assert all(f == SENDER for f, _ in tx), tx
        assert sorted(srv.rcpts()) == sorted(rcpts), "each recipient exactly once"
        assert len(p.log_lines(r"%s: to=<r\d@example\.test>, .*status=sent" % qid)) == 7
    finally:
        srv.stop()


def test_destination_suspension(postino_factory):
    """Connection refused: the destination is suspended after the first
    failure; mail for it is deferred without a connection attempt each,
    and all of it goes out once it listens and the suspension is over."""
    port = h.free_port()  # nothing listens here yet: connect gets ECONNREFUSED
    p = postino_factory(main=_relay(port, destination_suspend_time="6s"))
    first = p.send(SENDER, "first@example.test")
    p.wait_log(r"%s: to=<first@example\.test>, .*status=deferred" % first)
    p.wait_log(r"destination smtp:.* suspended for 6s")
    refused_rx = r"status=deferred \(connect to .*[Rr]efused"
    refused = len(p.log_lines(refused_rx))
    assert refused == 1, p.log_lines(refused_rx)

    later = _send_many(p, 4, "later%d@example.test")
    for i, qid in enumerate(later):
        p.wait_log(r"%s: to=<later%d@example\.test>, .*status=deferred "
                   r"\(delivery temporarily suspended: " % (qid, i), timeout=5)
    assert len(p.log_lines(refused_rx)) == refused, \
        "a suspended destination was connected to again"

    srv = TxSink(port=port).start()
    try:
        srv.wait_rcpts(5, timeout=40)
        p.wait_queue_empty()
        got = sorted(srv.rcpts())
        assert got == sorted(["first@example.test"] +
                             ["later%d@example.test" % i for i in range(4)]), got
        # The suspension, not luck, kept the connections away: no refused
        # attempt while it lasted (the server came up inside it).
        assert len(p.log_lines(refused_rx)) == refused
    finally:
        srv.stop()


def test_bounce_queue_lifetime(postino_factory, sink):
    """A bounce (null sender) that keeps being deferred expires after
    bounce_queue_lifetime although maximal_queue_lifetime is long: removed,
    logged, and no notification about the notification."""
    rcpt = "orig-sender@example.test"
    sink.on_rcpt(rcpt, forever="451 4.3.0 mailbox busy, try later")
    p = postino_factory(main=_relay(sink.port, bounce_queue_lifetime="2s",
                                    maximal_queue_lifetime="1d",
                                    local_transport="smtp:[127.0.0.1]:%d" % sink.port))
    t0 = time.time()
    qid = p.send("", rcpt)
    p.wait_log(r"%s: to=<%s>, .*status=deferred" % (qid, re.escape(rcpt)))
    p.wait_log(r"%s: from=<>, status=expired" % qid, timeout=20)
    p.wait_removed(qid)
    assert time.time() - t0 >= 2.0
    assert qid not in p.queue_files()
    # Never bounced again: no notice queued for it, nothing at the sink
    # but the refused attempts, and exactly one "removed".
    assert not p.log_lines(r"%s: sender non-delivery notification" % qid)
    time.sleep(2.5)  # a second round, if any, would have happened by now
    assert len(p.log_lines(r"%s: removed" % qid)) == 1
    assert not p.log_lines(r"%s: to=<%s>, .*status=sent" % (qid, re.escape(rcpt)))
    # The one notice: a double bounce to postmaster, from double-bounce@.
    notice = sink.wait_to("postmaster@postino.test")[0]
    assert notice.mail_from == "double-bounce@postino.test", notice
    assert len(sink.received()) == 1, sink.received()
    p.wait_queue_empty(timeout=20)


# ---- the queue index's start-up messages (qmgr_index.c, qmgr.c)

def test_fresh_index_is_created_not_rebuilt(postino_factory):
    p = postino_factory()
    p.wait_log(r"qmgr\[\d+\]: queue index: 0 messages")
    assert p.log_lines(r"qmgr\[\d+\]: queue index created")
    assert not p.log_lines(r"not closed cleanly|rebuilding")
    p.stop()                       # clean stop: neither message on restart
    p.start()
    p.wait_log(r"qmgr\[\d+\]: queue index: 0 messages", count=2)
    assert len(p.log_lines(r"queue index created")) == 1
    assert not p.log_lines(r"not closed cleanly|rebuilding")
    p.kill_all()                   # unclean: now it is a rebuild
    p.start()
    p.wait_log(r"qmgr\[\d+\]: queue index was not closed cleanly: rebuilding it")
    assert len(p.log_lines(r"queue index created")) == 1


def test_index_lock_permission_message(postino_factory):
    """A lock file qmgr may not open is a permission problem, not a
    second queue manager: the fatal message says what to fix."""
    import os
    import pwd
    p = postino_factory(start=False)
    idx = os.path.join(p.spool, "index")
    os.makedirs(idx, exist_ok=True)
    owner = pwd.getpwnam(h.MAIL_OWNER)
    os.chown(p.spool, owner.pw_uid, owner.pw_gid)
    os.chown(idx, owner.pw_uid, owner.pw_gid)
    lock = os.path.join(idx, "lock")
    with open(lock, "w"):
        pass
    os.chown(lock, 0, 0)
    os.chmod(lock, 0o600)
    p.start()
    line = p.wait_log(r"qmgr\[\d+\]: fatal: .*index/lock", timeout=25)[0]
    assert "must be writable by mail_owner" in line, line
    assert "not starting a second one" not in line, line
    assert "locked by another" not in line, line
    os.chown(lock, owner.pw_uid, owner.pw_gid)   # fixed: master's restart gets going
    p.wait_log(r"qmgr\[\d+\]: queue index: 0 messages", timeout=40)
