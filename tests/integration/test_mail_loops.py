"""Mail loops end, and end in one bounce: a nexthop that is postino itself
(the greeting names us: 5.4.6, as Postfix), hopcount_limit on
Received:/Delivered-To: headers (554 5.4.0), and a forwarding loop between
two instances."""
import os
import re
import time

import postino_harness as h

SENDER = "s@sender.test"


def _line(p, rcpt, status, timeout=30):
    return p.wait_log(r"to=<%s>, .*status=%s" % (re.escape(rcpt), status), timeout=timeout)[0]


def _dsn_for(sink, rcpt, timeout=30):
    """The first DSN to SENDER that reports on rcpt."""
    def find():
        for m in sink.received(lambda m: m.mail_from == "" and SENDER in m.rcpts):
            if rcpt.lower() in m.content.decode(errors="replace").lower():
                return m
        return None
    return h.wait_until(find, timeout=timeout, what="a DSN about %s" % rcpt)


def test_mail_loop_bounces_once(postino_factory, sink):
    p = postino_factory(start=False)
    tfile = os.path.join(p.conf, "transport")
    with open(tfile, "w") as f:
        f.write("loop.test smtp:[127.0.0.1]:%d\n" % p.port)   # postino itself
    p.cli("map", "build", tfile, check=True)
    p.set(transport_maps="hash:" + tfile)
    p.start()
    rcpt = "user@loop.test"
    qid = p.send(SENDER, rcpt, subject="loop")
    line = _line(p, rcpt, "bounced")
    assert "%s: to=<%s>, relay=127.0.0.1[127.0.0.1]:%d" % (qid, rcpt, p.port) in line, line
    assert "dsn=5.4.6, status=bounced (mail for [127.0.0.1]:%d loops back to myself)" % p.port \
        in line, line
    assert p.log_lines(r"host 127\.0\.0\.1\[127\.0\.0\.1\]:%d greeted me with my own "
                       r"hostname postino\.test" % p.port)
    dsn = _dsn_for(sink, rcpt)
    _, blocks = h.dsn_parts(dsn.msg)
    assert blocks[0]["status"].strip() == "5.4.6", blocks[0]
    assert "loops back to myself" in dsn.content.decode(errors="replace")
    p.wait_removed(qid)
    time.sleep(2)
    # Exactly one attempt, and the looping message never came back in.
    assert len(p.log_lines(r"to=<%s>" % re.escape(rcpt))) == 1, p.log_lines(rcpt)
    assert len(p.log_lines(r"from=<%s>" % re.escape(SENDER))) == 1
    assert not sink.to(rcpt)


def _msg_with(hdrs):
    return ("".join(hdrs) + "From: <s@sender.test>\r\nTo: <u@example.test>\r\n"
            "Subject: hops\r\nMessage-ID: <%s@hops.test>\r\n\r\nbody\r\n" % time.time_ns())


def _data(p, text):
    """MAIL, RCPT, DATA on a fresh connection: (code, reply text)."""
    s = p.smtp()
    try:
        assert s.mail("s@sender.test")[0] == 250
        assert s.rcpt("u@example.test")[0] == 250
        code, resp = s.data(text.encode())
        return code, resp.decode()
    finally:
        s.quit()


# ================================================================ hopcount_limit

def test_hopcount_limit(postino):
    p = postino
    rcvd = ["Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            % (i, i + 1) for i in range(51)]
    code, resp = _data(p, _msg_with(rcvd))
    assert (code, resp) == (554, "5.4.0 Error: too many hops"), (code, resp)
    p.wait_log(r"[0-9A-F]{17}: reject: .*554 5\.4\.0 Error: too many hops.* from=<s@sender\.test>")
    time.sleep(0.3)
    assert p.queue_files() == []
    # Delivered-To: counts as a hop as well (Postfix's cleanup does)
    code, resp = _data(p, _msg_with(rcvd[:49] + ["Delivered-To: a@b.test\r\n"] * 2))
    assert code == 554, resp
    # a folded Received: is one hop; 50 hops are fine
    rcvd50 = rcvd[:49] + ["Received: from a.test\r\n\tby b.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"]
    code, resp = _data(p, _msg_with(rcvd50))
    assert code == 250, resp
    # "received:" in the body is no header
    code, resp = _data(p, _msg_with(rcvd[:50]) + "".join(rcvd) + "received: x\r\n")
    assert code == 250, resp


def test_hopcount_limit_setting(postino_factory):
    p = postino_factory(main={"hopcount_limit": "3"})
    rcvd = ["Received: from h%d.test by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i
            for i in range(4)]
    assert _data(p, _msg_with(rcvd[:3]))[0] == 250
    assert _data(p, _msg_with(rcvd))[0] == 554


def test_forwarding_loop_ends_in_a_bounce(postino_factory, sink):
    """A sends loop.test to B, B sends it back to A: every hop adds a
    Received: header, so after hopcount_limit hops the receiving smtpd
    refuses it and the sending side bounces it to the sender."""
    a = postino_factory(start=False, main={"myhostname": "a.postino.test"})
    b = postino_factory(start=False, main={"myhostname": "b.postino.test"})
    for me, peer in ((a, b), (b, a)):
        tfile = os.path.join(me.conf, "transport")
        with open(tfile, "w") as f:
            f.write("loop.test smtp:[127.0.0.1]:%d\n" % peer.port)
        me.cli("map", "build", tfile, check=True)
        me.set(transport_maps="hash:" + tfile)
    a.start()
    b.start()
    a.send("s@sender.test", "u@loop.test", subject="loop")
    dsn = sink.wait_for(lambda m: m.mail_from == "" and "s@sender.test" in m.rcpts,
                        timeout=120)[0]
    text = dsn.content.decode(errors="replace")
    assert "too many hops" in text, text[:2000]
    _, rcpts = h.dsn_parts(dsn.msg)
    assert rcpts and rcpts[0].get("status") == "5.4.0", rcpts
    refused = a.log_lines(r"reject: .*too many hops") + b.log_lines(r"reject: .*too many hops")
    assert len(refused) == 1, refused
    # one trip per hop: hop N arrives with N-1 Received: headers of the loop
    sent = a.log_lines(r"to=<u@loop\.test>.*status=sent") + \
        b.log_lines(r"to=<u@loop\.test>.*status=sent")
    assert len(sent) == 50, len(sent)
    # and it stops: nothing left queued on either side, nothing more sent
    a.wait_queue_empty(timeout=30)
    b.wait_queue_empty(timeout=30)
    time.sleep(1)
    assert len(sink.received(lambda m: m.mail_from == "")) == 1
    assert not sink.to("u@loop.test")
