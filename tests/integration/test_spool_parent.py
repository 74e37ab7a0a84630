"""The daemons work relative to the spool, their working directory, so the
mail user needs no search permission on the spool's parents: a checkout
(or /etc-style layout) under a 0700 directory such as /root still runs
("make run" from a clone in root's home)."""
import os


def test_spool_under_private_parent(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port}, start=False)
    os.chmod(p.dir, 0o700)  # the postino user cannot enter it
    p.start()
    qid = p.send("s@sender.test", "parent@example.test")
    sink.wait_to("parent@example.test")
    p.wait_removed(qid)
    assert not p.log_lines(r"fatal|Permission denied"), p.log_tail(40)
