"""A queue file qmgr was never told about is still delivered.

smtpd makes a message durable, answers 250, then tells qmgr; if smtpd dies
between the two (or its qmgr connection breaks), the file sits in the
spool with no notification. qmgr's periodic scan (every queue_run_delay,
like Postfix's scan of its incoming queue) must adopt it. To create such a
file, a second instance runs smtpd alone (no qmgr to notify), and its
committed file is moved into the first instance's spool."""
import glob
import os
import time


def test_unnotified_queue_file_is_delivered(postino_factory, sink):
    relay = {"relayhost": "[127.0.0.1]:%d" % sink.port, "queue_run_delay": "2s"}
    a = postino_factory(main=relay)
    b = postino_factory(main=relay, start=False)
    b.master_cf = lambda: "127.0.0.1:%d inet n - n - 1 smtpd\n" % b.port
    b.write_config()
    b.start()
    qid = b.send("s@sender.test", "lost@example.test", subject="never announced")
    src = glob.glob(os.path.join(b.spool, "queue", "*", qid))[0]
    assert os.stat(src).st_mode & 0o100, "committed (owner execute bit) before the 250"
    time.sleep(1)  # let b's smtpd give up notifying (no qmgr there)
    # The hashed directory depends on the id only: same name in both spools.
    dst = os.path.join(a.spool, "queue", os.path.basename(os.path.dirname(src)), qid)
    os.rename(src, dst)
    # The periodic scan leaves complete files younger than a minute alone
    # (their notification is on its way): make this one look abandoned.
    old = time.time() - 120
    os.utime(dst, (old, old))
    msg = sink.wait_to("lost@example.test", timeout=20)[0]
    assert b"never announced" in msg.content
    a.wait_removed(qid)
    assert a.log_lines(r"queue scan: found 1 message\(s\) qmgr had not been told about")
