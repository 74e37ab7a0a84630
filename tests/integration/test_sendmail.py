"""Local submission (issue 11): the sendmail command, as cron, PHP's mail(),
Git and mailx call it, submitting over the UNIX socket public/submit to an
smtpd that learns the user from SO_PEERCRED.

The submitting user is `nobody` (setpriv drops every id and group), so the
tests show a user with no rights on the spool can submit and cannot read
the queue. mynetworks names no local address: relaying is allowed because
the session is a local one, not because of 127.0.0.1. Mail for
alonea.test goes to the sink on 127.0.0.4."""
import email
import email.policy
import os
import pwd
import re
import smtplib
import socket
import subprocess

import pytest

import postino_harness as h
from test_dkim import assert_verifies, keys  # noqa: F401 (a fixture)
from test_submission import secrets  # noqa: F401 (a fixture)

SUBMIT_ROW = "submit unix n - n - 2 smtpd"
NOBODY = pwd.getpwnam("nobody")
EX_USAGE, EX_DATAERR, EX_NOUSER, EX_UNAVAILABLE = 64, 65, 67, 69


def local(postino_factory, start=True, **main):
    p = {"mynetworks": "192.0.2.0/24", "myorigin": "origin.test"}
    p.update(main)
    return postino_factory(main=p, master_extra=[SUBMIT_ROW], start=start)


def as_user(cmd, user):
    if user is None:
        return cmd
    return ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid,
            "--clear-groups"] + cmd


def sendmail(p, *args, data=b"", user=NOBODY, prog="sendmail", timeout=60):
    cmd = [os.path.join(h.BIN, prog), "-C", p.conf] + [str(a) for a in args]
    return subprocess.run(as_user(cmd, user), input=data, capture_output=True, timeout=timeout)


def parsed(msg):
    return email.message_from_bytes(msg.content, policy=email.policy.compat32)


def wait_submit(p):
    path = os.path.join(p.spool, "public", "submit")
    h.wait_until(lambda: os.path.exists(path), timeout=20, what="public/submit")


# ---------------------------------------------------------------- the callers

def test_cron_t_as_a_user(postino_factory, sink):
    """What cron runs (cronie: -FCronDaemon -i -odi -oem -oi -t): LF line
    ends, no From:/Date:/Message-ID:, recipients in To:/Cc:/Bcc:."""
    p = local(postino_factory)
    wait_submit(p)
    data = (b"To: u@alonea.test\nCc: Other <c@alonea.test>\nBcc: hidden@alonea.test\n"
            b"Subject: Cron <nobody@host> echo hi\n"
            b"Content-Type: text/plain; charset=UTF-8\n\nhi\n")
    r = sendmail(p, "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", data=data)
    assert r.returncode == 0, r.stderr
    for rcpt in ("u@alonea.test", "c@alonea.test", "hidden@alonea.test"):
        msg = sink.wait_to(rcpt)[-1]
    assert msg.mail_from == "nobody@origin.test"
    m = parsed(msg)
    assert m["Bcc"] is None, "Bcc: must be removed"
    assert m["To"] == "u@alonea.test" and "c@alonea.test" in m["Cc"]
    assert m["From"] == "CronDaemon <nobody@origin.test>"
    assert m["Date"] and m["Message-ID"]
    assert m.get_payload() in ("hi\r\n", "hi\n")
    # the user is recorded: the Received: header and the log, as pickup does
    assert "from userid %d" % NOBODY.pw_uid in m["Received"], m["Received"]
    p.wait_log(r"smtpd\[\d+\]: [0-9A-F]+: client=localhost\[127\.0\.0\.1\], uid=%d "
               r"from=<nobody@origin\.test>" % NOBODY.pw_uid)


def test_pflogsumm_counts_local_submissions(postino_factory, sink):
    """The client= part of the uid line is what pflogsumm counts."""
    p = local(postino_factory)
    wait_submit(p)
    for i in range(3):
        r = sendmail(p, "count%d@alonea.test" % i, data=b"Subject: count\n\nx\n")
        assert r.returncode == 0, r.stderr
    p.wait_log(r": removed", count=3)
    r = subprocess.run(["/usr/sbin/pflogsumm", "--syslog-name=postino", p.maillog],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s*3\s+received\b", r.stdout, re.M), r.stdout
    assert re.search(r"^\s*3\s+delivered\b", r.stdout, re.M), r.stdout


def test_php_t_i_keeps_a_lone_dot(postino_factory, sink):
    """PHP's mail() runs "sendmail -t -i": a line holding one dot is text;
    lines starting with a dot keep it (stuffed on the wire, unstuffed by
    the receiver). Without -i the lone dot ends the message."""
    p = local(postino_factory)
    wait_submit(p)
    body = b"first\n.\n..two dots\n.x\nlast\n"
    data = b"To: php@alonea.test\nFrom: web@origin.test\nSubject: php\n\n" + body
    r = sendmail(p, "-t", "-i", data=data)
    assert r.returncode == 0, r.stderr
    got = sink.wait_to("php@alonea.test")[-1].content
    assert got.split(b"\r\n\r\n", 1)[1] == body.replace(b"\n", b"\r\n"), got
    # without -i: the old rule, the dot line ends the input
    data = b"To: old@alonea.test\nSubject: old\n\nbefore\n.\nafter\n"
    r = sendmail(p, "-t", data=data)
    assert r.returncode == 0, r.stderr
    got = sink.wait_to("old@alonea.test")[-1].content
    assert got.split(b"\r\n\r\n", 1)[1] == b"before\r\n", got


def test_f_F_and_recipients_on_the_command_line(postino_factory, sink):
    """Git's send-email and mailx: sender by -f, full name by -F, the
    recipients as arguments; a bare name gets @$myorigin."""
    p = local(postino_factory)
    wait_submit(p)
    data = b"Subject: patch\n\nbody\n"
    r = sendmail(p, "-f", "<bounces@sender.test>", "-F", "Jane Q. Doe", "-oi",
                 "git@alonea.test", data=data)
    assert r.returncode == 0, r.stderr
    msg = sink.wait_to("git@alonea.test")[-1]
    assert msg.mail_from == "bounces@sender.test"
    assert parsed(msg)["From"] == '"Jane Q. Doe" <bounces@sender.test>'
    # -f with a bare name; -fADDR written together
    r = sendmail(p, "-fdaemon", "mx@alonea.test", data=data)
    assert r.returncode == 0, r.stderr
    assert sink.wait_to("mx@alonea.test")[-1].mail_from == "daemon@origin.test"


def test_bs_speaks_smtp_on_stdin(postino_factory, sink):
    """sendmail -bs: a real SMTP client (smtplib) on its stdin/stdout."""
    p = local(postino_factory)
    wait_submit(p)
    ours, theirs = socket.socketpair()
    cmd = as_user([os.path.join(h.BIN, "sendmail"), "-C", p.conf, "-bs"], NOBODY)
    proc = subprocess.Popen(cmd, stdin=theirs, stdout=theirs, stderr=subprocess.PIPE)
    theirs.close()
    s = smtplib.SMTP()
    s.sock = ours
    s.file = None
    code, _ = s.getreply()
    assert code == 220
    s.ehlo("client.test")
    text = b"From: <nobody@origin.test>\r\nSubject: bs\r\n\r\nvia -bs\r\n"
    s.sendmail("nobody@origin.test", ["bs@alonea.test"], text)
    s.quit()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    msg = sink.wait_to("bs@alonea.test")[-1]
    assert b"via -bs" in msg.content
    assert "from userid %d" % NOBODY.pw_uid in parsed(msg)["Received"]


# ---------------------------------------------------------------- queue and privacy

def test_bp_q_and_the_queue_stays_private(postino_factory, sink):
    """mailq (-bp) lists the queue for the admin, -q flushes it; the user
    who submitted the mail can read neither the queue nor its files."""
    p = local(postino_factory, minimal_backoff_time="1h", maximal_backoff_time="1h")
    wait_submit(p)
    sink.on_rcpt("later@alonea.test", forever="451 4.3.0 come back later")
    r = sendmail(p, "later@alonea.test", data=b"Subject: secret\n\nsecret text\n")
    assert r.returncode == 0, r.stderr
    p.wait_log(r"to=<later@alonea\.test>, .*status=deferred")
    qid = p.queue_files()[0]

    r = sendmail(p, "-bp", user=None)  # root, as the admin
    assert r.returncode == 0, r.stderr
    assert qid in r.stdout.decode() and "later@alonea.test" in r.stdout.decode()
    r = sendmail(p, "-q", user=None)
    assert r.returncode == 0 and b"flushed" in r.stdout, r

    # the user: no listing from qmgr, no way into the spool
    r = sendmail(p, "-bp")
    assert r.returncode == EX_UNAVAILABLE and qid.encode() not in r.stdout, r
    assert b"permission denied" in r.stderr
    qdir = os.path.join(p.spool, "queue")
    path = [os.path.join(d, f) for d, _, fs in os.walk(qdir) for f in fs if f == qid][0]
    probe = ("import os, sys\n"
             "for f in sys.argv[1:]:\n"
             "    try:\n"
             "        open(f).read() if os.path.isfile(f) or f.endswith('%s') else os.listdir(f)\n"
             "        print('READ', f)\n"
             "    except PermissionError:\n"
             "        print('DENIED', f)\n" % qid)
    r = subprocess.run(as_user(["/usr/bin/python3", "-c", probe, qdir, os.path.dirname(path),
                                path, os.path.join(p.spool, "public"),
                                os.path.join(p.spool, "private")], NOBODY),
                       capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all(ln.startswith("DENIED") for ln in lines), r


# ---------------------------------------------------------------- checks and signing

def test_signed_as_authenticated_mail(postino_factory, keys, sink):  # noqa: F811
    """Local submissions are signed by the dkim_sign_authenticated rule
    (mynetworks plays no part: it names no local address, and
    dkim_sign_mynetworks is off)."""
    p = local(postino_factory, dkim_key_maps=keys["table"], dkim_sign_mynetworks="no")
    wait_submit(p)
    data = (b"From: Sender <s@sign.test>\nTo: <signed@alonea.test>\nSubject: dkim\n"
            b"Date: Mon, 30 Nov 2026 12:00:00 +0000\nMessage-ID: <1@sign.test>\n\n"
            b"signed body\n.leading dot\n")
    r = sendmail(p, "-t", "-i", "-f", "s@sign.test", data=data)
    assert r.returncode == 0, r.stderr
    assert_verifies(sink.wait_to("signed@alonea.test")[-1].content, keys, n=2)
    # with the rule off, nothing is signed
    p.set(dkim_sign_authenticated="no")
    p.cli("reload", check=True)
    p.wait_log(r"reload", timeout=20)
    h.wait_until(lambda: sendmail(p, "-f", "s@sign.test", "unsigned@alonea.test",
                                  data=data).returncode == 0, timeout=20,
                 what="a submission after the reload")
    assert b"DKIM-Signature" not in sink.wait_to("unsigned@alonea.test")[-1].content


def test_no_tls_demanded_on_the_local_socket(postino_factory, sink, secrets):  # noqa: F811
    """smtpd_tls_security_level=encrypt (a submission-only server) holds
    for the network, not for the UNIX socket, which never leaves the host."""
    p = local(postino_factory, smtpd_tls_security_level="encrypt", smtpd_sasl_auth_enable="yes",
              smtpd_tls_auth_only="yes", **secrets)
    wait_submit(p)
    s = p.smtp()
    assert s.mail("nobody@origin.test")[0] == 530
    s.close()
    r = sendmail(p, "tls@alonea.test", data=b"Subject: no tls\n\nx\n")
    assert r.returncode == 0, r.stderr
    sink.wait_to("tls@alonea.test")


def test_local_login_sender_maps(postino_factory, sink):
    """-f is open to everyone by default; local_login_sender_maps limits it
    to the user's own address and what the table gives the login."""
    p = local(postino_factory, start=False)
    table = os.path.join(p.conf, "login_senders")
    with open(table, "w") as f:
        f.write("nobody @sender.test, <>\nroot *\n")
    p.cli("map", "build", table, check=True)
    p.set(local_login_sender_maps="hash:" + table)
    p.start()
    wait_submit(p)
    data = b"Subject: senders\n\nx\n"
    assert sendmail(p, "own@alonea.test", data=data).returncode == 0
    assert sendmail(p, "-f", "list@sender.test", "dom@alonea.test", data=data).returncode == 0
    assert sendmail(p, "-f", "<>", "null@alonea.test", data=data).returncode == 0
    r = sendmail(p, "-f", "ceo@example.test", "forged@alonea.test", data=data)
    assert r.returncode == EX_DATAERR, r
    assert b"not owned by user nobody" in r.stderr
    assert sendmail(p, "-f", "ceo@example.test", "root@alonea.test", data=data,
                    user=None).returncode == 0
    for rcpt in ("own", "dom", "null", "root"):
        sink.wait_to(rcpt + "@alonea.test")
    assert sink.wait_to("dom@alonea.test")[-1].mail_from == "list@sender.test"
    assert sink.wait_to("null@alonea.test")[-1].mail_from == ""
    assert not sink.to("forged@alonea.test")
    p.wait_log(r"NOQUEUE: reject: MAIL from localhost\[127\.0\.0\.1\]: 553 5\.7\.1 "
               r"<ceo@example\.test>: Sender address rejected: not owned by user nobody")


def test_usage_errors_and_refusals(postino_factory, sink):
    p = local(postino_factory)
    wait_submit(p)
    r = sendmail(p, data=b"Subject: x\n\nx\n")
    assert r.returncode == EX_USAGE and b"no recipients" in r.stderr, r
    r = sendmail(p, "-Z", "u@alonea.test")
    assert r.returncode == EX_USAGE and b"unknown option -Z" in r.stderr, r
    r = sendmail(p, "-bd")
    assert r.returncode == EX_USAGE and b"unsupported mode -bd" in r.stderr, r
    r = sendmail(p, "-bp", "u@alonea.test")
    assert r.returncode == EX_USAGE, r
    r = sendmail(p, "-t", data=b"Subject: nobody to send to\n\nx\n")
    assert r.returncode == EX_DATAERR and b"no recipient addresses" in r.stderr, r
    # a refused recipient: nothing is sent, not even to the good one
    r = sendmail(p, "ok@alonea.test", "bad@", data=b"Subject: x\n\nx\n")
    assert r.returncode == EX_NOUSER and b"recipient <bad@> refused" in r.stderr, r
    # the mail system is down
    p.stop()
    r = sendmail(p, "u@alonea.test", data=b"Subject: x\n\nx\n")
    assert r.returncode == EX_UNAVAILABLE and b"cannot connect" in r.stderr, r
    assert not sink.to("ok@alonea.test")


def test_newaliases_entry_point(postino_factory):
    """newaliases (and sendmail -bi) build the alias tables like
    postino newaliases."""
    p = local(postino_factory, start=False)
    aliases = os.path.join(p.conf, "aliases")
    with open(aliases, "w") as f:
        f.write("postmaster: root\n")
    p.set(alias_database="hash:" + aliases)
    r = sendmail(p, prog="newaliases", user=None)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(aliases + ".db")
    os.unlink(aliases + ".db")
    r = sendmail(p, "-bi", user=None)
    assert r.returncode == 0 and os.path.exists(aliases + ".db"), r.stderr
