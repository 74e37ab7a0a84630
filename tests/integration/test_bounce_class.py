"""Bounce classification (issue #8): every failed or deferred delivery
carries a category - in the delivery log line (after the status text), in
the queue file (postino queue show), and in the DSN - and
"postino bounce classify" names the category and the rule. A broken rules
file is refused at start, naming file and line."""
import os
import re

import postino_harness as h

SENDER = "s@sender.test"


def _dsn_to_sender(sink):
    return sink.wait_for(lambda m: m.mail_from == "" and SENDER in m.rcpts)[0]


def test_reply_categories_in_log_queue_and_dsn(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 <bad@example.test>: Recipient address "
                                             "rejected: User unknown in virtual mailbox table")
    sink.on_rcpt("full@example.test", forever="452 4.2.2 The email account that you tried to "
                                              "reach is over quota.")
    qid = p.send(SENDER, ["bad@example.test", "full@example.test", "ok@example.test"])
    sink.wait_to("ok@example.test")
    # category= after the status text, so pflogsumm still reads the line
    p.wait_log(r"%s: to=<bad@example\.test>, relay=.*, dsn=5\.1\.1, status=bounced "
               r"\(host .* said: 550 5\.1\.1 .*User unknown.*\), category=bad-mailbox(, site=\S+)?$" % qid)
    p.wait_log(r"%s: to=<full@example\.test>, .*dsn=4\.2\.2, status=deferred \(.*over quota.*\), "
               r"category=quota-issues(, site=\S+)?$" % qid)
    sent = p.log_lines(r"%s: to=<ok@example\.test>, .*status=sent" % qid)
    assert sent and "category=" not in sent[0]
    # the DSN names the category, per recipient and in the text
    dsn = _dsn_to_sender(sink)
    _, blocks = h.dsn_parts(dsn.msg)
    assert len(blocks) == 1
    assert blocks[0]["x-postino-category"].strip() == "bad-mailbox"
    text = [x for x in dsn.msg.walk() if x.get_content_type() == "text/plain"][0]
    assert "(category: bad-mailbox)" in text.get_payload(), text.get_payload()
    # the queue file keeps the deferred recipient's category
    show = p.cli("queue", "show", qid, check=True).stdout
    full = show[show.index("full@example.test"):]
    assert "category=quota-issues" in full.splitlines()[1], show


def test_421_rate_limited(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("busy@example.test", forever="421 4.7.28 Our system has detected an unusual rate "
                                              "of unsolicited mail originating from your IP "
                                              "address. To protect our users from spam, mail "
                                              "sent from your IP address has been temporarily "
                                              "rate limited.")
    qid = p.send(SENDER, "busy@example.test")
    p.wait_log(r"%s: to=<busy@example\.test>, .*dsn=4\.7\.28, status=deferred \(.*\), "
               r"category=rate-limited(, site=\S+)?$" % qid)


def test_own_failures_connection_refused(postino_factory):
    closed = h.free_port()  # nothing listens there
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % closed})
    qid = p.send(SENDER, "x@example.test")
    p.wait_log(r"%s: to=<x@example\.test>, .*status=deferred \(connect to .*Connection refused\), "
               r"category=no-answer-from-host(, site=\S+)?$" % qid)


def test_expired_is_message_expired(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "maximal_queue_lifetime": "2s"})
    sink.on_rcpt("never@example.test", forever="451 4.3.0 try again later")
    qid = p.send(SENDER, "never@example.test")
    p.wait_log(r"%s: from=<%s>, status=expired, returned to sender, category=message-expired"
               % (qid, re.escape(SENDER)), timeout=40)
    dsn = _dsn_to_sender(sink)
    _, blocks = h.dsn_parts(dsn.msg)
    assert blocks[0]["x-postino-category"].strip() == "message-expired"


def test_cli_classify(postino_factory):
    p = postino_factory(start=False)
    rules = os.path.join(p.conf, "bounce_classifier_rules")
    r = p.cli("bounce", "classify", r"550-5.1.1 The email account that you tried to reach does "
              r"not exist. Please try\n550 5.1.1 double-checking the recipient's email address",
              check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == "bad-mailbox"
    assert re.match(re.escape(rules) + r":\d+$", lines[1]), lines
    for args in (("-",), ()):
        r = subprocess_stdin(p, args, "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily "
                                      "deferred due to unexpected volume or user complaints\n")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "rate-limited"
    r = p.cli("bounce", "classify", "hello there", check=True)
    assert r.stdout.splitlines() == ["other", "no rule matched"]
    # the site's own rules come first
    local = os.path.join(p.conf, "local_rules")
    with open(local, "w") as f:
        f.write("# ours\ninactive-mailbox dsn=5.1.1 text=gone for good\n")
    p.set(bounce_classifier_local_rules="local_rules")
    r = p.cli("bounce", "classify", "550 5.1.1 user gone for good", check=True)
    assert r.stdout.splitlines() == ["inactive-mailbox", local + ":2"]


def subprocess_stdin(p, args, text):
    import subprocess
    cmd = [os.path.join(h.BIN, "postino"), "-c", p.conf, "bounce", "classify"] + list(args)
    return subprocess.run(cmd, input=text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=30)


def test_bad_rules_refused_at_start(postino_factory):
    p = postino_factory(start=False)
    with open(os.path.join(p.conf, "my_rules"), "w") as f:
        f.write("# comment\n\nbad-mailbox code=5xx text=(unclosed\n")
    p.set(bounce_classifier_local_rules="my_rules")
    path = os.path.join(p.conf, "my_rules")
    r = p.cli("start")
    assert r.returncode != 0
    assert "%s, line 3: bad regular expression" % path in r.stderr + r.stdout, r
    r = p.cli("check")
    assert r.returncode != 0 and "%s, line 3:" % path in r.stderr
    r = p.cli("bounce", "classify", "550 5.1.1 x")
    assert r.returncode != 0 and "%s, line 3:" % path in r.stderr
