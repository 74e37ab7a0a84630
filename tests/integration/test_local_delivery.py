"""Final delivery: the virtual, local, pipe, error and discard agents
(issue #10). Mail is routed to them with transport_maps; what they wrote
is read back from the Maildir/mbox and compared byte for byte."""
import os
import pwd
import shutil
import stat

import pytest

import postino_harness as h

NOBODY = pwd.getpwnam("nobody")

AGENT_ROWS = ["virtual unix - n n - - virtual",
              "error unix - - n - - error",
              "discard unix - - n - - discard"]


def _transport(p, lines):
    tfile = os.path.join(p.conf, "transport")
    with open(tfile, "w") as f:
        f.write("".join(l + "\n" for l in lines))
    p.cli("map", "build", tfile, check=True)
    return "hash:" + tfile


def _table(p, name, lines):
    path = os.path.join(p.conf, name)
    with open(path, "w") as f:
        f.write("".join(l + "\n" for l in lines))
    p.cli("map", "build", path, check=True)
    return "hash:" + path


def _vbase(p):
    """virtual_mailbox_base owned by nobody, reachable by nobody."""
    os.chmod(p.dir, 0o755)
    base = os.path.join(p.dir, "vmail")
    os.mkdir(base, 0o700)
    os.chown(base, NOBODY.pw_uid, NOBODY.pw_gid)
    return base


def _virtual(postino_factory, limit=None, extra=None):
    p = postino_factory(start=False, master_extra=AGENT_ROWS)
    base = _vbase(p)
    main = dict(transport_maps=_transport(p, ["example.test virtual:",
                                              "bad.test error:5.1.1 no such users here",
                                              "later.test error:4.7.1 come back later",
                                              "void.test discard:"]),
                virtual_mailbox_base=base,
                virtual_mailbox_maps=_table(p, "vmailbox", ["alice@example.test example.test/alice/",
                                                            "bob@example.test example.test/bob/"]),
                virtual_uid_maps="static:%d" % NOBODY.pw_uid,
                virtual_gid_maps="static:%d" % NOBODY.pw_gid,
                virtual_minimum_uid="1")
    if limit is not None:
        main["virtual_mailbox_limit"] = str(limit)
    main.update(extra or {})
    p.set(**main)
    p.start()
    return p, base


def _maildir_files(md, sub="new"):
    d = os.path.join(md, sub)
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def _expected(sender, rcpt, raw):
    """What a Maildir file holds: Return-Path:, Delivered-To:, then the
    content as queued (smtpd's Received: first) with LF line ends."""
    return ("Return-Path: <%s>\nDelivered-To: %s\n" % (sender, rcpt)).encode(), \
        raw.replace("\r\n", "\n").encode()


def test_virtual_maildir_read_back(postino_factory, sink):
    p, base = _virtual(postino_factory)
    raw, _ = h.Postino.make_message("s@sender.test", ["alice@example.test"],
                                    body="line one\r\n.dot line\r\nFrom the start\r\n")
    qid = p.send("s@sender.test", "alice@example.test", raw=raw)
    p.wait_log(r"%s: to=<alice@example.test>, relay=virtual, .*status=sent" % qid)
    p.wait_removed(qid)
    md = os.path.join(base, "example.test", "alice")
    files = _maildir_files(md)
    assert len(files) == 1
    data = open(files[0], "rb").read()
    head, body = _expected("s@sender.test", "alice@example.test", raw)
    assert data.startswith(head)
    rest = data[len(head):]
    assert rest.startswith(b"Received: ")
    assert rest.endswith(body)           # the content, byte for byte
    assert b"\r" not in data
    st = os.stat(files[0])
    assert st.st_uid == NOBODY.pw_uid and stat.S_IMODE(st.st_mode) == 0o600
    for sub in ("tmp", "new", "cur"):
        assert os.stat(os.path.join(md, sub)).st_uid == NOBODY.pw_uid
    assert _maildir_files(md, "tmp") == []


def test_virtual_unknown_user_bounces(postino_factory, sink):
    p, base = _virtual(postino_factory)
    qid = p.send("s@sender.test", "nobody@example.test")
    p.wait_log(r"%s: to=<nobody@example.test>, relay=virtual, .*dsn=5.1.1, status=bounced "
               r"\(user unknown in virtual mailbox table\)" % qid)
    sink.wait_to("s@sender.test")


@pytest.mark.parametrize("sub", ["tmp", "new", "."])
def test_virtual_symlink_never_written_through(postino_factory, sink, sub):
    p, base = _virtual(postino_factory)
    outside = os.path.join(p.dir, "outside")
    os.mkdir(outside, 0o777)
    for s in ("tmp", "new", "cur"):
        os.mkdir(os.path.join(outside, s), 0o777)
    os.chown(outside, NOBODY.pw_uid, NOBODY.pw_gid)
    dom = os.path.join(base, "example.test")
    os.mkdir(dom, 0o700)
    os.chown(dom, NOBODY.pw_uid, NOBODY.pw_gid)
    md = os.path.join(dom, "alice")
    if sub == ".":
        os.symlink(outside, md)
    else:
        os.mkdir(md, 0o700)
        for s in ("tmp", "new", "cur"):
            if s != sub:
                os.mkdir(os.path.join(md, s), 0o700)
                os.chown(os.path.join(md, s), NOBODY.pw_uid, NOBODY.pw_gid)
        os.chown(md, NOBODY.pw_uid, NOBODY.pw_gid)
        os.symlink(os.path.join(outside, sub), os.path.join(md, sub))
    qid = p.send("s@sender.test", "alice@example.test")
    p.wait_log(r"%s: to=<alice@example.test>, relay=virtual, .*status=deferred "
               r"\(cannot open maildir .*symbolic link" % qid)
    for root, dirs, files in os.walk(outside):
        assert files == [], "written outside the mailbox: %s" % files


def test_virtual_quota_552(postino_factory, sink):
    p, base = _virtual(postino_factory, limit=200)
    qid = p.send("s@sender.test", "bob@example.test", body="x" * 500 + "\r\n")
    p.wait_log(r"%s: to=<bob@example.test>, relay=virtual, .*dsn=5.2.2, status=bounced "
               r"\(mailbox full" % qid)
    sink.wait_to("s@sender.test")
    assert _maildir_files(os.path.join(base, "example.test", "bob")) == []


def test_virtual_quota_deferred_by_parameter(postino_factory, sink):
    p, base = _virtual(postino_factory, limit=200, extra={"virtual_mailbox_limit_defer": "yes"})
    qid = p.send("s@sender.test", "bob@example.test", body="x" * 500 + "\r\n")
    p.wait_log(r"%s: to=<bob@example.test>, relay=virtual, .*dsn=4.2.2, status=deferred" % qid)


def test_error_and_discard(postino_factory, sink):
    p, base = _virtual(postino_factory)
    q1 = p.send("s@sender.test", "u@bad.test")
    p.wait_log(r"%s: to=<u@bad.test>, relay=error, .*dsn=5.1.1, status=bounced "
               r"\(no such users here\)" % q1)
    q2 = p.send("s@sender.test", "u@later.test")
    p.wait_log(r"%s: to=<u@later.test>, relay=error, .*dsn=4.7.1, status=deferred "
               r"\(come back later\)" % q2)
    q3 = p.send("s@sender.test", "u@void.test")
    p.wait_log(r"%s: to=<u@void.test>, relay=discard, .*status=sent" % q3)
    p.wait_removed(q3)
    assert sink.to("u@void.test") == []
