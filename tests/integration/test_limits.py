"""Limits and relay control through the whole system: message_size_limit
(552), smtpd_recipient_limit (452), relay denied for strangers (554 5.7.1)."""
import smtplib

import pytest


def test_size_limit(postino_factory, sink):
    p = postino_factory(main={"message_size_limit": "20000",
                              "relayhost": "[127.0.0.1]:%d" % sink.port})
    s = p.smtp()
    assert "size" in s.esmtp_features and s.esmtp_features["size"].strip() == "20000"
    code, resp = s.mail("s@sender.test", ["SIZE=50000"])
    assert code == 552, (code, resp)
    s.rset()
    # Without SIZE=, the limit is enforced at the end of DATA.
    assert s.mail("s@sender.test")[0] == 250
    assert s.rcpt("big@example.test")[0] == 250
    text, _ = p.make_message("s@sender.test", ["big@example.test"], body=("y" * 78 + "\r\n") * 400)
    code, resp = s.data(text.encode())
    assert code == 552, (code, resp)
    # The session survives and a small message still goes through.
    qid = p.send("s@sender.test", "small@example.test", conn=s)
    s.quit()
    sink.wait_to("small@example.test")
    p.wait_removed(qid)
    assert not sink.to("big@example.test")


def test_recipient_limit(postino_factory, sink):
    p = postino_factory(main={"smtpd_recipient_limit": "3",
                              "relayhost": "[127.0.0.1]:%d" % sink.port})
    s = p.smtp()
    assert s.mail("s@sender.test")[0] == 250
    for i in range(3):
        assert s.rcpt("r%d@example.test" % i)[0] == 250
    code, resp = s.rcpt("r3@example.test")
    assert code == 452, (code, resp)
    text, _ = p.make_message("s@sender.test", ["r0@example.test"])
    code, resp = s.data(text.encode())
    assert code == 250, (code, resp)
    s.quit()
    for i in range(3):
        sink.wait_to("r%d@example.test" % i)
    assert not sink.to("r3@example.test")


def test_relay_denied_for_strangers(postino_factory):
    p = postino_factory(main={"mynetworks": "10.0.0.0/8"})
    s = p.smtp()
    assert s.mail("s@sender.test")[0] == 250
    code, resp = s.rcpt("victim@example.test")
    assert code == 554 and resp.startswith(b"5.7.1"), (code, resp)
    code, resp = s.rcpt("root@postino.test")  # a system user: known locally
    assert code == 250, (code, resp)
    s.quit()
    assert p.log_lines(r"reject.*victim@example\.test"), "the rejection must be logged"
