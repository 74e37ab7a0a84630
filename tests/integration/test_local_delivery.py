"""Final delivery: the virtual, local, pipe, error and discard agents
(issue #10). Mail is routed to them with transport_maps; what they wrote
is read back from the Maildir/mbox and compared byte for byte."""
import os
import pwd
import shutil
import stat
import subprocess

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


@pytest.mark.parametrize("sub", [".", "tmp", "new"])
def test_virtual_maildir_of_another_owner_refused(postino_factory, sink, sub):
    """A Maildir (or its tmp/ or new/) owned by another user than the
    recipient is refused, even when the recipient could write to it (mode
    0777): deferred, nothing written; with the owner put right, the same
    message is delivered."""
    p, base = _virtual(postino_factory)
    other = pwd.getpwnam("daemon")
    dom = os.path.join(base, "example.test")
    md = os.path.join(dom, "alice")
    os.mkdir(dom, 0o700)
    os.chown(dom, NOBODY.pw_uid, NOBODY.pw_gid)
    for d in (md, os.path.join(md, "tmp"), os.path.join(md, "new"), os.path.join(md, "cur")):
        os.mkdir(d)
        os.chmod(d, 0o777)
        os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    wrong = os.path.normpath(os.path.join(md, sub))
    os.chown(wrong, other.pw_uid, other.pw_gid)
    qid = p.send("s@sender.test", "alice@example.test")
    p.wait_log(r"%s: to=<alice@example.test>, relay=virtual, .*dsn=4.2.0, status=deferred "
               r"\(cannot open maildir .*: not owned by the recipient\)" % qid)
    for root, dirs, files in os.walk(md):
        assert files == [], "written into another user's maildir: %s" % files
    os.chown(wrong, NOBODY.pw_uid, NOBODY.pw_gid)
    p.cli("queue", "flush", check=True)
    p.wait_log(r"%s: to=<alice@example.test>, relay=virtual, .*status=sent" % qid)
    assert len(_maildir_files(md)) == 1


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


def test_virtual_full_disk_defers_then_delivers(postino_factory, sink):
    """virtual_mailbox_base on a 64 KB tmpfs: a 200 KB message defers
    (ENOSPC, nothing half-written left behind) and is delivered once the
    file system has room."""
    p = postino_factory(start=False, master_extra=AGENT_ROWS)
    os.chmod(p.dir, 0o755)
    base = os.path.join(p.dir, "vmail")
    os.mkdir(base)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700,uid=%d,gid=%d"
                    % (NOBODY.pw_uid, NOBODY.pw_gid), "tmpfs", base], check=True)
    try:
        p.set(transport_maps=_transport(p, ["example.test virtual:"]),
              virtual_mailbox_base=base,
              virtual_mailbox_maps=_table(p, "vmailbox", ["alice@example.test alice/"]),
              virtual_uid_maps="static:%d" % NOBODY.pw_uid,
              virtual_gid_maps="static:%d" % NOBODY.pw_gid, virtual_minimum_uid="1")
        p.start()
        body = ("y" * 998 + "\r\n") * 200
        qid = p.send("s@sender.test", "alice@example.test", body=body)
        p.wait_log(r"%s: to=<alice@example.test>, relay=virtual, .*dsn=4.3.1, status=deferred "
                   r"\(cannot write maildir file: insufficient system storage\)" % qid)
        md = os.path.join(base, "alice")
        assert _maildir_files(md) == [] and _maildir_files(md, "tmp") == []
        subprocess.run(["mount", "-o", "remount,size=2m", base], check=True)
        p.cli("queue", "flush", check=True)
        p.wait_log(r"%s: to=<alice@example.test>, relay=virtual, .*status=sent" % qid)
        files = _maildir_files(md)
        assert len(files) == 1 and open(files[0], "rb").read().endswith(
            body.replace("\r\n", "\n").encode())
    finally:
        p.stop()
        subprocess.run(["umount", "-l", base])


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


# ---------------------------------------------------------------- local

LOCAL_ROWS = AGENT_ROWS + ["local unix - n n - - local"]
DAEMON = pwd.getpwnam("daemon")
BIN_USER = pwd.getpwnam("bin")


def _local(postino_factory, aliases, extra=None, aliases_owner=None):
    """local.test routed to the local agent; mailboxes are Maildirs under
    <dir>/mail/<user>/ (local_mailbox_base)."""
    p = postino_factory(start=False, master_extra=LOCAL_ROWS)
    os.chmod(p.dir, 0o755)
    with open(os.path.join(p.conf, "aliases"), "w") as f:
        f.write(aliases(p) if callable(aliases) else aliases)
    p.cli("newaliases", check=True)
    if aliases_owner is not None:
        os.chown(os.path.join(p.conf, "aliases.db"), aliases_owner, -1)
    main = dict(transport_maps=_transport(p, ["local.test local:"]),
                local_mailbox_base=os.path.join(p.dir, "mail"))
    main.update(extra or {})
    p.set(**{k: v for k, v in main.items() if v is not None})
    p.start()
    return p


def _mailbox(p, user):
    return _maildir_files(os.path.join(p.dir, "mail", user))


def test_newaliases_builds_the_table(postino_factory):
    p = postino_factory(start=False)
    with open(os.path.join(p.conf, "aliases"), "w") as f:
        f.write("# comment\nPostmaster: root\nlist: a,\n  b@example.org,\n\t\"|/bin/cmd x, y\"\n")
    p.cli("newaliases", check=True)
    tbl = os.path.join(p.conf, "aliases")
    assert p.cli("map", "query", tbl, "postmaster", check=True).stdout.strip() == "root"
    assert p.cli("map", "query", tbl, "list", check=True).stdout.strip() == \
        'a, b@example.org, "|/bin/cmd x, y"'
    with open(tbl, "w") as f:
        f.write("broken line\n")
    r = p.cli("newaliases")
    assert r.returncode != 0 and "line 1" in r.stderr


def test_local_maildir_read_back(postino_factory, sink):
    p = _local(postino_factory, "postmaster: daemon\n")
    raw, _ = h.Postino.make_message("s@sender.test", ["Postmaster@local.test"],
                                    body="hello\r\nFrom me\r\n")
    qid = p.send("s@sender.test", "Postmaster@local.test", raw=raw)
    p.wait_log(r"%s: to=<Postmaster@local.test>, relay=local, .*status=sent" % qid)
    files = _mailbox(p, "daemon")
    assert len(files) == 1
    data = open(files[0], "rb").read()
    head, body = _expected("s@sender.test", "Postmaster@local.test", raw)
    assert data.startswith(head) and data.endswith(body)
    assert os.stat(files[0]).st_uid == DAEMON.pw_uid
    assert os.stat(os.path.join(p.dir, "mail", "daemon")).st_uid == DAEMON.pw_uid


def test_local_unknown_user_bounces(postino_factory, sink):
    p = _local(postino_factory, "postmaster: daemon\n")
    qid = p.send("s@sender.test", "no-such-user@local.test")
    p.wait_log(r'%s: to=<no-such-user@local.test>, relay=local, .*dsn=5.1.1, status=bounced '
               r'\(unknown user: "no-such-user"\)' % qid)


def test_alias_list_delivers_to_each_once(postino_factory, sink):
    p = _local(postino_factory,
               "list: daemon, bin, far@sender.test, list2, daemon\n"
               "list2: daemon, \\bin\n")
    qid = p.send("s@sender.test", "list@local.test")
    p.wait_log(r"%s: to=<list@local.test>, relay=local, .*status=sent \(delivered to 3 "
               r"destinations\)" % qid)
    m = sink.wait_to("far@sender.test")[0]
    assert b"Delivered-To: list@local.test" in m.content
    assert m.mail_from == "s@sender.test"
    assert len(_mailbox(p, "daemon")) == 1
    assert len(_mailbox(p, "bin")) == 1
    p.wait_removed(qid)
    assert len(sink.to("far@sender.test")) == 1


def test_alias_loop_bounces_once(postino_factory, sink):
    p = _local(postino_factory, "loopa: loopb\nloopb: daemon, loopa\n")
    qid = p.send("s@sender.test", "loopa@local.test")
    p.wait_log(r'%s: to=<loopa@local.test>, relay=local, .*dsn=5.4.6, status=bounced '
               r'\(mail forwarding loop: alias "loopa" expands to itself\)' % qid)
    sink.wait_to("s@sender.test")
    p.wait_removed(qid)
    assert len(sink.to("s@sender.test")) == 1
    assert _mailbox(p, "daemon") == []


def test_forwarding_loop_through_the_queue_bounces(postino_factory, sink):
    """a@local.test forwards to b@local.test (a new message), which
    forwards back: the Delivered-To: header stops it."""
    p = _local(postino_factory, "a: b@local.test\nb: a@local.test\n")
    qid = p.send("s@sender.test", "a@local.test")
    p.wait_log(r"to=<a@local.test>, relay=local, .*dsn=5.4.6, status=bounced "
               r"\(mail forwarding loop for a@local.test\)")
    sink.wait_to("s@sender.test")


def test_include_file(postino_factory, sink):
    inc = h.make_tmpdir("postino-inc-")
    os.chmod(inc, 0o755)
    path = os.path.join(inc, "members")
    with open(path, "w") as f:
        f.write("# members\nbin\ndaemon\n")
    try:
        p = _local(postino_factory, "team: :include:%s\n" % path)
        qid = p.send("s@sender.test", "team@local.test")
        p.wait_log(r"%s: to=<team@local.test>, relay=local, .*status=sent" % qid)
        assert len(_mailbox(p, "bin")) == 1 and len(_mailbox(p, "daemon")) == 1
    finally:
        shutil.rmtree(inc, ignore_errors=True)


def _outdir(p):
    out = os.path.join(p.dir, "out")
    os.mkdir(out, 0o777)
    os.chmod(out, 0o777)
    return out


def test_command_and_file_from_root_aliases(postino_factory, sink):
    def aliases(p):
        out = _outdir(p)
        return ('cmd: "|cat > %s/cmd.out; id -u >> %s/cmd.out"\n' % (out, out) +
                "tofile: %s/file.mbox\n" % out)
    p = _local(postino_factory, aliases)
    out = os.path.join(p.dir, "out")
    q1 = p.send("s@sender.test", "cmd@local.test", body="via command\r\n")
    p.wait_log(r"%s: to=<cmd@local.test>, relay=local, .*status=sent" % q1)
    text = open(os.path.join(out, "cmd.out"), "rb").read()
    assert b"Delivered-To: cmd@local.test\nReceived: " in text and b"via command\n" in text
    assert text.endswith(b"%d\n" % NOBODY.pw_uid)     # default_privs, not root
    q2 = p.send("s@sender.test", "tofile@local.test", body="From here\r\n")
    p.wait_log(r"%s: to=<tofile@local.test>, relay=local, .*status=sent" % q2)
    mbox = open(os.path.join(out, "file.mbox"), "rb").read()
    assert mbox.startswith(b"From s@sender.test ") and b"\n>From here\n" in mbox
    assert os.stat(os.path.join(out, "file.mbox")).st_uid == NOBODY.pw_uid


def test_command_and_file_refused_from_non_root_aliases(postino_factory, sink):
    def aliases(p):
        out = _outdir(p)
        return 'cmd: "|touch %s/ran"\ntofile: %s/file.mbox\n' % (out, out)
    p2 = _local(postino_factory, aliases, aliases_owner=NOBODY.pw_uid)
    out = os.path.join(p2.dir, "out")
    q1 = p2.send("s@sender.test", "cmd@local.test")
    p2.wait_log(r"%s: to=<cmd@local.test>, relay=local, .*dsn=5.7.1, status=bounced "
                r"\(mail to command is restricted" % q1)
    q2 = p2.send("s@sender.test", "tofile@local.test")
    p2.wait_log(r"%s: to=<tofile@local.test>, relay=local, .*dsn=5.7.1, status=bounced "
                r"\(mail to file is restricted" % q2)
    assert os.listdir(out) == []


def test_command_from_user_include_file_refused(postino_factory, sink):
    def aliases(p):
        out = _outdir(p)
        inc = os.path.join(out, "inc")
        with open(inc, "w") as f:
            f.write("|touch %s/ran\n" % out)
        os.chown(inc, NOBODY.pw_uid, NOBODY.pw_gid)
        return "team: :include:%s\n" % inc
    p = _local(postino_factory, aliases)
    out = os.path.join(p.dir, "out")
    qid = p.send("s@sender.test", "team@local.test")
    p.wait_log(r"%s: to=<team@local.test>, relay=local, .*dsn=5.7.1, status=bounced" % qid)
    assert not os.path.exists(os.path.join(out, "ran"))
    assert os.listdir(out) == ["inc"]


def test_mbox_in_spool_and_symlink_refused(postino_factory, sink):
    spool = h.make_tmpdir("postino-spool-")
    os.chmod(spool, 0o755)
    try:
        p = _local(postino_factory, "", extra={"local_mailbox_base": None,
                                                "mail_spool_directory": spool})
        q1 = p.send("s@sender.test", "daemon@local.test", body="From the top\r\n")
        p.wait_log(r"%s: to=<daemon@local.test>, relay=local, .*status=sent" % q1)
        mbox = os.path.join(spool, "daemon")
        data = open(mbox, "rb").read()
        assert data.startswith(b"From s@sender.test ")
        assert b"\nDelivered-To: daemon@local.test\nReceived: " in data
        assert data.endswith(b"\n>From the top\n\n")
        st = os.stat(mbox)
        assert st.st_uid == DAEMON.pw_uid and stat.S_IMODE(st.st_mode) == 0o600
        # a symlink planted as the mailbox: nothing written through it
        target = os.path.join(p.dir, "target")
        open(target, "w").close()
        os.symlink(target, os.path.join(spool, "bin"))
        q2 = p.send("s@sender.test", "bin@local.test")
        p.wait_log(r"%s: to=<bin@local.test>, relay=local, .*status=deferred \(cannot open "
                   r"mailbox bin: symbolic link\)" % q2)
        assert os.path.getsize(target) == 0
        # a hard link to another file is refused too
        os.link(target, os.path.join(spool, "sys"))
        q3 = p.send("s@sender.test", "sys@local.test")
        p.wait_log(r"%s: to=<sys@local.test>, relay=local, .*status=deferred" % q3)
        assert os.path.getsize(target) == 0
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def test_local_maildir_symlink_refused(postino_factory, sink):
    p = _local(postino_factory, "")
    outside = os.path.join(p.dir, "outside")
    os.mkdir(outside, 0o777)
    for s in ("tmp", "new", "cur"):
        os.mkdir(os.path.join(outside, s), 0o777)
    base = os.path.join(p.dir, "mail")
    os.makedirs(os.path.join(base, "daemon"))
    os.chown(os.path.join(base, "daemon"), DAEMON.pw_uid, DAEMON.pw_gid)
    os.symlink(os.path.join(outside, "new"), os.path.join(base, "daemon", "new"))
    qid = p.send("s@sender.test", "daemon@local.test")
    p.wait_log(r"%s: to=<daemon@local.test>, relay=local, .*status=deferred "
               r"\(cannot open maildir .*symbolic link" % qid)
    for root, dirs, files in os.walk(outside):
        assert files == []


# ---------------------------------------------------------------- pipe

PIPE_SCRIPT = r"""#!/bin/sh
# test command: what it got, then an exit status chosen by the recipient
out=%(out)s
rcpt="$2"
printf '%%s\n' "$@" > "$out/$rcpt.args"
id -u >> "$out/$rcpt.args"
cat > "$out/$rcpt.stdin"
case "$rcpt" in
ok@*|ok+*) exit 0 ;;
temp@*) echo "try again later" >&2; exit 75 ;;
nouser@*) echo "no such mailbox here" >&2; exit 67 ;;
hang@*) sleep 301 & echo $! > "$out/grandchild.pid"; echo $$ > "$out/hang.pid"; exec sleep 300 ;;
esac
exit 1
"""


def _pipe(postino_factory, flags=""):
    p = postino_factory(start=False, master_extra=AGENT_ROWS)
    os.chmod(p.dir, 0o755)
    out = _outdir(p)
    script = os.path.join(p.dir, "cmd.sh")
    with open(script, "w") as f:
        f.write(PIPE_SCRIPT % {"out": out})
    os.chmod(script, 0o755)
    p.master_extra.append("pipe unix - n n - - pipe %suser=nobody argv=%s ${sender} "
                          "${recipient} -x${user}+${extension}@${domain} ${nexthop}"
                          % (flags, script))
    p.set(transport_maps=_transport(p, ["pipe.test pipe:gateway"]),
          recipient_delimiter="+", pipe_time_limit="3s")
    p.start()
    return p, out


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_pipe_exit_codes(postino_factory, sink):
    p, out = _pipe(postino_factory, flags="flags=DR ")
    raw, _ = h.Postino.make_message("s@sender.test", ["ok@pipe.test"], body="piped\r\n")
    q1 = p.send("s@sender.test", "ok@pipe.test", raw=raw)
    p.wait_log(r"%s: to=<ok@pipe.test>, relay=pipe, .*dsn=2.0.0, status=sent" % q1)
    args = open(os.path.join(out, "ok@pipe.test.args")).read().split("\n")
    assert args[:4] == ["s@sender.test", "ok@pipe.test", "-xok+@pipe.test", "gateway"]
    assert args[4] == str(NOBODY.pw_uid)
    data = open(os.path.join(out, "ok@pipe.test.stdin"), "rb").read()
    head, body = _expected("s@sender.test", "ok@pipe.test", raw)
    assert data.startswith(head) and data.endswith(body)
    q2 = p.send("s@sender.test", "temp@pipe.test")
    p.wait_log(r"%s: to=<temp@pipe.test>, relay=pipe, .*dsn=4.3.0, status=deferred \(command "
               r"died with status 75 \(temporary failure\). Command output: try again later" % q2)
    q3 = p.send("s@sender.test", "nouser@pipe.test")
    p.wait_log(r"%s: to=<nouser@pipe.test>, relay=pipe, .*dsn=5.1.1, status=bounced \(command "
               r"died with status 67 \(user unknown\). Command output: no such mailbox" % q3)
    sink.wait_to("s@sender.test")


def test_pipe_extension(postino_factory, sink):
    p, out = _pipe(postino_factory)
    qid = p.send("s@sender.test", "ok+tag@pipe.test")
    p.wait_log(r"%s: to=<ok\+tag@pipe.test>, relay=pipe, .*status=sent" % qid)
    args = open(os.path.join(out, "ok+tag@pipe.test.args")).read().split("\n")
    assert args[2] == "-xok+tag@pipe.test"
    # without flags=DR the message is passed as queued
    assert open(os.path.join(out, "ok+tag@pipe.test.stdin"), "rb").read().startswith(b"Received:")


def test_pipe_hanging_command_killed_and_deferred(postino_factory, sink):
    p, out = _pipe(postino_factory)
    qid = p.send("s@sender.test", "hang@pipe.test")
    p.wait_log(r"%s: to=<hang@pipe.test>, relay=pipe, .*dsn=4.3.0, status=deferred \(command "
               r"time limit exceeded \(3s\): killed\)" % qid, timeout=30)
    pids = [int(open(os.path.join(out, n)).read()) for n in ("hang.pid", "grandchild.pid")]
    h.wait_until(lambda: not any(_alive(x) for x in pids), timeout=10,
                 what="the command and its child killed")
    p.cli("queue", "delete", qid)


def test_pipe_refuses_root(postino_factory, sink):
    p = postino_factory(start=False, master_extra=AGENT_ROWS + [
        "pipe unix - n n - - pipe user=root argv=/bin/cat"])
    p.set(transport_maps=_transport(p, ["pipe.test pipe:"]))
    p.start()
    qid = p.send("s@sender.test", "ok@pipe.test")
    p.wait_log(r"pipe\[\d+\]: fatal: pipe: user=root: the command may not run with root")
    assert not p.log_lines(r"%s: to=<ok@pipe.test>, relay=pipe, .*status=sent" % qid)


def test_make_run_config_delivers_localhost_mail():
    """The shipped conf/ ("make run"): postmaster@localhost ends up in
    var/mail/root/new/ next to the configuration directory."""
    h.ensure_mail_owner()
    top = h.make_tmpdir("postino-run-")
    conf = os.path.join(top, "conf")
    shutil.copytree(os.path.join(h.REPO, "conf"), conf,
                    ignore=shutil.ignore_patterns("*.db", "dist"))
    port = h.free_port()
    with open(os.path.join(conf, "master.cf")) as f:
        master = f.read().replace("127.0.0.1:2525", "127.0.0.1:%d" % port)
    with open(os.path.join(conf, "master.cf"), "w") as f:
        f.write(master)
    with open(os.path.join(conf, "main.cf"), "a") as f:
        f.write("maillog_file = %s/maillog\n" % top)
    cli = [os.path.join(h.BIN, "postino"), "-c", conf]
    try:
        subprocess.run(cli + ["newaliases"], check=True)
        subprocess.run(cli + ["start"], check=True, timeout=30)
        h.wait_until(lambda: _connects(port), what="smtpd of the make-run config")
        import smtplib
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("me@example.org", ["postmaster@localhost"],
                       b"Subject: hello\r\n\r\nfor the postmaster\r\n")
        new = os.path.join(top, "var", "mail", "root", "new")
        h.wait_until(lambda: os.path.isdir(new) and os.listdir(new), what="mail in %s" % new)
        data = open(os.path.join(new, os.listdir(new)[0]), "rb").read()
        assert data.startswith(b"Return-Path: <me@example.org>\nDelivered-To: "
                               b"postmaster@localhost\n")
        assert data.endswith(b"\n\nfor the postmaster\n")
    finally:
        subprocess.run(cli + ["stop"], timeout=60)
        shutil.rmtree(top, ignore_errors=True)


def _connects(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


@pytest.fixture
def home_user():
    """A throwaway user whose home is a temp dir it owns (removed after)."""
    name = "pagt%d" % os.getpid()
    home = h.make_tmpdir("postino-home-")
    subprocess.run(["useradd", "--home-dir", home, "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    pw = pwd.getpwnam(name)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o755)
    try:
        yield pw
    finally:
        subprocess.run(["userdel", name])
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("mailbox", ["Maildir/", "Mailbox"])
def test_home_mailbox_as_the_user_and_symlinks_refused(postino_factory, sink, home_user,
                                                       mailbox):
    p = _local(postino_factory, "", extra={"local_mailbox_base": None,
                                           "home_mailbox": mailbox})
    rcpt = "%s@local.test" % home_user.pw_name
    qid = p.send("s@sender.test", rcpt)
    p.wait_log(r"%s: to=<%s>, relay=local, .*status=sent" % (qid, rcpt))
    path = os.path.join(home_user.pw_dir, mailbox)
    if mailbox.endswith("/"):
        files = _maildir_files(path)
        assert len(files) == 1 and os.stat(files[0]).st_uid == home_user.pw_uid
        shutil.rmtree(os.path.join(path, "new"))
        victim = os.path.join(p.dir, "victim")
        os.mkdir(victim, 0o777)
        os.symlink(victim, os.path.join(path, "new"))
        check = lambda: os.listdir(victim) == []
    else:
        data = open(path, "rb").read()
        assert data.startswith(b"From s@sender.test ") and os.stat(path).st_uid == home_user.pw_uid
        os.unlink(path)
        victim = os.path.join(p.dir, "victim")
        open(victim, "w").close()
        os.symlink(victim, path)
        check = lambda: os.path.getsize(victim) == 0
    q2 = p.send("s@sender.test", rcpt)
    p.wait_log(r"%s: to=<%s>, relay=local, .*status=deferred \(cannot open (maildir|mailbox) "
               r".*symbolic link" % (q2, rcpt))
    assert check()


def test_final_agents_emit_events(postino_factory, workdir):
    """The agents built on the common skeleton (issue #11): each outcome
    is an event with the agent as relay and qmgr's attempt number."""
    import json
    log = os.path.join(h.mail_owner_dir(os.path.join(workdir, "log")), "events.json")
    p = postino_factory(start=False,
                        master_extra=AGENT_ROWS + ["events unix - - n - 1 events"])
    p.set(event_log=log, transport_maps=_transport(p, ["bad.test error:5.1.1 no such users here",
                                                       "later.test error:4.7.1 come back later",
                                                       "void.test discard:"]))
    p.start()
    q = {r: p.send("s@sender.test", r) for r in ("u@bad.test", "u@later.test", "u@void.test")}
    want = {"u@bad.test": ("bounce", "error", "5.1.1"),
            "u@later.test": ("transient_failure", "error", "4.7.1"),
            "u@void.test": ("delivery", "discard", "2.0.0")}

    def events():
        try:
            with open(log) as f:
                evs = [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return None
        got = {e["recipient"]: e for e in evs
               if e["type"] != "reception" and e.get("attempt") == 1}
        return got if set(got) >= set(want) else None
    got = h.wait_until(events, timeout=30, what="the agents' events")
    for rcpt, (typ, relay, dsn) in want.items():
        e = got[rcpt]
        assert (e["type"], e["relay"], e["dsn"], e["queue_id"]) == (typ, relay, dsn, q[rcpt]), e
        assert e["size"] > 0 and e["sender"] == "s@sender.test"
    assert got["u@later.test"]["reply"] == "come back later"
