"""`postino config import-postfix` (issue #11): a Postfix main.cf and
master.cf become postino's. The master.cf is Debian's (the postfix package
is installed for the bench), the main.cf a sample in Debian's shape with
settings postino cannot take. What cannot be mapped is listed by name;
Postfix's spool and daemon paths are never carried over; the result passes
`postino check`, and a postino started on it (moved to a free port) relays
a message to the sink as the Postfix main.cf said."""
import os
import shutil

import pytest

import postino_harness as h

SAMPLE_MAIN = """\
# Debian-style main.cf
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
smtpd_tls_security_level=may
smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated
    defer_unauth_destination
myhostname = imported.example
myorigin = %(mailname)s
mydestination = $myhostname, localhost
relayhost = [127.0.0.1]:%(sink_port)d
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
transport_maps = lmdb:/etc/postfix/transport
message_size_limit = 52428800
maximal_queue_lifetime = 3x
queue_directory = /var/spool/postfix
mail_owner = postfix
"""


def postfix_master_cf():
    for p in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist"):
        if os.path.exists(p):
            return p
    pytest.fail("no Postfix master.cf (make deps installs postfix)", pytrace=False)


def enable_submission(text):
    """Uncomment Debian's submission row and its -o lines (their comment
    lines in between stay, as an admin would leave them)."""
    out, inside = [], False
    for ln in text.splitlines():
        if ln.startswith("#submission "):
            inside, ln = True, ln[1:]
        elif inside and ln.startswith("#  -o"):
            ln = ln[1:]
        elif inside and not ln.startswith("#     "):
            inside = False
        out.append(ln)
    assert any(ln.startswith("submission ") for ln in out), "no submission row to enable"
    return "\n".join(out) + "\n"


@pytest.fixture
def postfix_dir(workdir, sink):
    d = os.path.join(workdir, "postfix")
    os.mkdir(d)
    with open(postfix_master_cf()) as f:
        master = enable_submission(f.read())
    with open(os.path.join(d, "master.cf"), "w") as f:
        f.write(master)
    mailname = os.path.join(d, "mailname")
    with open(mailname, "w") as f:
        f.write("origin.example\n")
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write(SAMPLE_MAIN % {"mailname": mailname, "sink_port": sink.port})
    return d


def import_postfix(p, *args):
    return p.cli("config", "import-postfix", *args, timeout=60)


def parse_cf(text):
    return dict(ln.split(" = ", 1) for ln in text.splitlines()
                if " = " in ln and not ln.startswith("#"))


def test_import_lists_what_it_cannot_map(postino_factory, postfix_dir, workdir):
    p = postino_factory(start=False)
    out = os.path.join(workdir, "imported")
    r = import_postfix(p, "-o", out, postfix_dir)
    assert r.returncode == 0, r.stderr
    unmapped = r.stderr
    for name in ("main.cf: biff ", "main.cf: compatibility_level ",
                 "main.cf: append_dot_mydomain ", "main.cf: inet_interfaces ",
                 "main.cf: smtp_tls_session_cache_database ",
                 "main.cf: transport_maps (lmdb:", "main.cf: maximal_queue_lifetime ",
                 "master.cf: pickup ", "master.cf: cleanup ", "master.cf: tlsmgr ",
                 "master.cf: defer ", "master.cf: trace ", "master.cf: showq ",
                 "master.cf: retry ", "master.cf: ifmail (pipe: user=",
                 "master.cf: uucp (pipe: argv=",
                 "master.cf: submission: -o smtpd_reject_unlisted_recipient"):
        assert "postino: not mapped: " + name in unmapped, (name, unmapped)
    kept = [ln for ln in unmapped.splitlines() if ln.startswith("postino: kept postino's own:")]
    assert kept and "queue_directory" in kept[0] and "mail_owner" in kept[0], unmapped
    main = parse_cf(open(os.path.join(out, "main.cf")).read())
    assert main["myhostname"] == "imported.example"
    assert main["myorigin"] == "origin.example", main     # read from the mailname file
    assert main["smtpd_relay_restrictions"] == \
        "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
    assert main["message_size_limit"] == "52428800"
    assert main["queue_directory"] == p.spool, main       # ours, never Postfix's spool
    for gone in ("biff", "compatibility_level", "transport_maps", "maximal_queue_lifetime",
                 "mail_owner", "readme_directory"):
        assert gone not in main, gone
    master = open(os.path.join(out, "master.cf")).read()
    rows = {ln.split()[0]: ln.split() for ln in master.splitlines()
            if ln and not ln[0].isspace() and not ln.startswith("#")}
    assert rows["25"][1:3] == ["inet", "n"] and rows["25"][7] == "smtpd", rows["25"]
    assert rows["25"][4] == "n"                            # not chrooted
    assert rows["smtp"][7] == "delivery" and rows["relay"][7] == "delivery"
    assert rows["qmgr"][7] == "qmgr" and rows["bounce"][7] == "bounce"
    assert rows["qmgr"][2] == "-", rows["qmgr"]  # Postfix's public qmgr: ours is private
    assert rows["feedback"][7] == "feedback"               # added: postino needs it
    for gone in ("pickup", "cleanup", "tlsmgr", "defer", "showq", "postlog"):
        assert gone not in rows, gone
    assert "-o syslog_name=postfix" not in master
    after = master[master.index("\n587 "):].split("\n")[2:]
    sub = after[:next(i for i, ln in enumerate(after) if not ln.startswith("  "))]
    assert "  -o syslog_name=postino/submission" in sub, sub
    assert "  -o smtpd_tls_security_level=encrypt" in sub, sub
    assert "  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject" in sub, sub
    r = h.subprocess.run([os.path.join(h.BIN, "postino"), "-c", out, "check"],
                         capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # an existing configuration is never overwritten
    again = import_postfix(p, "-o", out, postfix_dir)
    assert again.returncode != 0 and "not overwriting" in again.stderr, again.stderr


def test_import_prints_without_o(postino_factory, postfix_dir):
    p = postino_factory(start=False)
    r = import_postfix(p, postfix_dir)
    assert r.returncode == 0, r.stderr
    assert "# ---- main.cf ----" in r.stdout and "# ---- master.cf ----" in r.stdout
    assert "myhostname = imported.example" in r.stdout
    assert "not mapped: main.cf: biff " in r.stderr


def test_imported_configuration_runs_and_relays(postino_factory, postfix_dir, workdir, sink):
    p = postino_factory(start=False)
    out = os.path.join(workdir, "imported")
    r = import_postfix(p, "-o", out, postfix_dir)
    assert r.returncode == 0, r.stderr
    main = open(os.path.join(out, "main.cf")).read()
    master = open(os.path.join(out, "master.cf")).read()
    # only what a test must change: the port, the log, and the test DNS
    assert "\n25               inet" in master
    master = master.replace("\n25               inet", "\n127.0.0.1:%d inet" % p.port)
    assert "\n587              inet" in master
    master = master.replace("\n587              inet", "\n127.0.0.1:%d inet" % h.free_port())
    main += "maillog_file = %s\ndns_servers = 127.0.0.1:%d\n" % (p.maillog, p.dns_port)
    with open(os.path.join(p.conf, "main.cf"), "w") as f:
        f.write(main)
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p.start(timeout=60)
    q = p.send("s@sender.test", "someone@example.test")
    msgs = sink.wait_to("someone@example.test", timeout=60)
    assert msgs[0].ip == "127.0.0.1"     # through relayhost, not example.test's MX
    p.wait_log(r"%s: to=<someone@example\.test>.*status=sent" % q, timeout=60)
