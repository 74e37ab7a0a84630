"""Packaging (issue #11): the man pages render without warnings and list
every parameter; `make install DESTDIR=...` lays out the FHS tree with a
configuration that points at the installed daemons; `make deb` builds a
package lintian accepts, which `dpkg -i` installs into this machine, whose
installed default configuration (moved to a free port and relaying to a
sink) starts and delivers a message, whose systemd unit
`systemd-analyze verify` accepts, and which `dpkg --purge` removes without
a trace.

The package test installs into /usr and /etc, so it runs as root only (CI
does) and refuses to run over an existing postino installation; it stops
and purges what it installed even when it fails. The suite itself uses
./bin and never the installed copy."""
import os
import shutil
import smtplib
import stat
import subprocess

import pytest

import postino_harness as h

REPO = h.REPO
MAN_SRC = ["conf/man/postino.1", "conf/man/sendmail.1", "conf/man/master.cf.5"]


def run(cmd, timeout=900, check=True, **kw):
    r = subprocess.run(cmd, cwd=kw.pop("cwd", REPO), capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, "%s failed (%d):\n%s\n%s" % (
            " ".join(cmd), r.returncode, r.stdout[-4000:], r.stderr[-4000:])
    return r


def built_man_maincf():
    run(["make", "-s", "man"])
    return os.path.join(REPO, "build/rel/man/main.cf.5")


def groff_warnings(path):
    r = run(["groff", "-ww", "-z", "-man", path], check=False)
    return r.returncode, r.stderr


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_pages_render_without_warnings():
    for page in [os.path.join(REPO, p) for p in MAN_SRC] + [built_man_maincf()]:
        rc, err = groff_warnings(page)
        assert rc == 0 and err == "", "%s: %s" % (page, err)
        r = run(["man", "--warnings", "-l", page], check=False,
                env=dict(os.environ, MANWIDTH="80", MAN_KEEP_STDERR="1"))
        assert r.returncode == 0 and r.stderr == "", "%s: %s" % (page, r.stderr)


def test_main_cf_man_page_lists_every_parameter(postino_bin):
    """main.cf(5) is generated from the parameter table: every name that
    `postino config` prints has its entry."""
    page = open(built_man_maincf()).read()
    out = run([os.path.join(postino_bin, "postino"), "-c", os.path.join(REPO, "conf"),
               "config"]).stdout
    names = [ln.split(" = ")[0] for ln in out.splitlines() if " = " in ln]
    assert len(names) > 100, out[:500]
    entries = set()
    lines = page.splitlines()
    for i, ln in enumerate(lines):
        if ln == ".TP" and i + 1 < len(lines) and lines[i + 1].startswith(".B "):
            entries.add(lines[i + 1][3:].replace("\\-", "-"))
    missing = [n for n in names if n not in entries]
    assert not missing, "main.cf(5) lacks: %s" % missing


def _resolve(dest, path):
    """path's symbolic links followed inside the DESTDIR tree dest (their
    targets are absolute paths of the installed system)."""
    path = os.path.join(dest, path)
    for _ in range(10):
        if not os.path.islink(path):
            return path
        target = os.readlink(path)
        path = os.path.join(dest, target.lstrip("/")) if target.startswith("/") else \
            os.path.join(os.path.dirname(path), target)
    raise AssertionError("a link loop at %s" % path)


def test_make_install_destdir_fhs_layout(tmp_path):
    dest = str(tmp_path / "root")
    run(["make", "-s", "install", "PREFIX=/usr", "DESTDIR=" + dest])
    for f in ["usr/sbin/postino", "usr/lib/postino/master", "usr/lib/postino/smtpd",
              "usr/lib/postino/qmgr", "usr/lib/postino/delivery", "usr/lib/postino/local",
              "etc/postino/main.cf", "etc/postino/master.cf", "etc/postino/aliases",
              "etc/postino/bounce_classifier_rules", "etc/postino/shaping_rules",
              "usr/share/man/man1/postino.1", "usr/share/man/man5/main.cf.5",
              "usr/share/man/man5/master.cf.5", "lib/systemd/system/postino.service",
              "etc/logrotate.d/postino", "var/spool/postino"]:
        assert os.path.exists(os.path.join(dest, f)), f
    assert os.readlink(os.path.join(dest, "usr/lib/postino/mailq")) == "/usr/sbin/postino"
    assert os.readlink(os.path.join(dest, "usr/bin/mailq")) == "/usr/lib/postino/mailq"
    assert os.access(os.path.join(dest, "usr/lib/postino/master"), os.X_OK)
    # Local submission needs no privilege (public/submit, peer credentials):
    # the sendmail entry points lead to postino, 0755, and nothing installed
    # is setuid or setgid.
    for entry in ("usr/sbin/sendmail", "usr/lib/postino/sendmail", "usr/bin/mailq",
                  "usr/bin/newaliases"):
        assert _resolve(dest, entry) == os.path.join(dest, "usr/sbin/postino"), entry
    st = os.lstat(os.path.join(dest, "usr/sbin/postino"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, oct(st.st_mode)
    for root, _, files in os.walk(dest):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), \
                "%s is set-id: %o" % (os.path.join(root, name), st.st_mode)
    # The installed configuration names the installed places.
    cli = [os.path.join(dest, "usr/sbin/postino"), "-c", os.path.join(dest, "etc/postino")]
    out = run(cli + ["config", "daemon_directory", "queue_directory", "mail_owner"]).stdout
    assert out.splitlines() == ["daemon_directory = /usr/lib/postino",
                                "queue_directory = /var/spool/postino",
                                "mail_owner = postino"], out
    unit = open(os.path.join(dest, "lib/systemd/system/postino.service")).read()
    assert "ExecStart=/usr/sbin/postino -c /etc/postino start-fg" in unit
    assert "@" not in unit.replace("ExecStart", ""), unit  # no placeholder left
    # A second install never overwrites an edited configuration.
    with open(os.path.join(dest, "etc/postino/main.cf"), "a") as f:
        f.write("myhostname = edited.example\n")
    run(["make", "-s", "install", "PREFIX=/usr", "DESTDIR=" + dest])
    assert "myhostname = edited.example" in open(os.path.join(dest, "etc/postino/main.cf")).read()


# ------------------------------------------------------------ the .deb

def dpkg_installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "ok installed" in r.stdout


def package_preconditions():
    if os.geteuid() != 0:
        return "installs a package into the machine: root only (CI runs it)"
    for tool in ("dpkg-buildpackage", "lintian", "dh"):
        if shutil.which(tool) is None:
            return "%s is missing (make deps installs devscripts, lintian, debhelper)" % tool
    if "asan" in h.BIN:
        return "the package builds its own release binaries: nothing to add under SANITIZE=1"
    if dpkg_installed("postino") or os.path.exists("/etc/postino") or \
            os.path.exists("/var/spool/postino"):
        return "postino is installed on this machine already: not touching it"
    return None


def deb_path():
    debs = [f for f in os.listdir(os.path.join(REPO, "build/deb"))
            if f.startswith("postino_") and f.endswith(".deb")]
    assert len(debs) == 1, debs
    return os.path.join(REPO, "build/deb", debs[0])


def purge():
    subprocess.run(["/usr/sbin/postino", "-c", "/etc/postino", "stop"], capture_output=True,
                   timeout=120)
    subprocess.run(["dpkg", "--purge", "postino"], capture_output=True, timeout=300)


def configure_for_test(smtp_port, sink_port, dns_port):
    """The installed default configuration, moved off port 25 (the machine
    may run another MTA) and relaying to the test sink."""
    mc = "/etc/postino/master.cf"
    text = open(mc).read()
    assert "\n25               inet" in text, text
    with open(mc, "w") as f:
        f.write(text.replace("\n25               inet", "\n127.0.0.1:%d inet" % smtp_port))
    with open("/etc/postino/main.cf", "a") as f:
        f.write("\n# test_package.py\nrelayhost = [127.0.0.1]:%d\n"
                "dns_servers = 127.0.0.1:%d\nmyhostname = pkgtest.example\n"
                "maillog_file = /var/spool/postino/maillog\n" % (sink_port, dns_port))


def check_spool_and_owner():
    """The spool's modes and owners, and smtpd running as postino."""
    import pwd
    import stat
    pw = pwd.getpwnam("postino")
    for d, mode, uid in (("", 0o755, 0), ("queue", 0o700, pw.pw_uid),
                         ("private", 0o700, pw.pw_uid), ("public", 0o711, pw.pw_uid)):
        st = os.stat(os.path.join("/var/spool/postino", d))
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, uid), (d, oct(st.st_mode))

    def smtpd_uids():
        uids = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink("/proc/%s/exe" % pid) == "/usr/lib/postino/smtpd":
                    uids.add(os.stat("/proc/" + pid).st_uid)
            except OSError:
                continue
        return uids
    # a freshly spawned smtpd is root for the moment before it drops
    h.wait_until(lambda: smtpd_uids() == {pw.pw_uid}, timeout=30,
                 what="every smtpd of the installed postino running as postino")


def test_deb_builds_installs_sends_and_purges(sink, dns):
    why = package_preconditions()
    if why:
        pytest.skip(why)
    # make deb runs lintian --fail-on error itself
    r = run(["make", "deb"], timeout=1800)
    assert "E: " not in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    deb = deb_path()
    try:
        run(["dpkg", "-i", deb], timeout=300)
        assert dpkg_installed("postino")
        for f in ("/usr/sbin/postino", "/usr/lib/postino/master", "/etc/postino/main.cf",
                  "/etc/postino/aliases.db", "/lib/systemd/system/postino.service",
                  "/usr/share/man/man5/main.cf.5.gz", "/etc/logrotate.d/postino"):
            assert os.path.exists(f), f
        assert run(["getent", "passwd", "postino"]).stdout
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "postino"]).stdout
        assert "/etc/postino/main.cf" in conffiles, conffiles
        # the installed default configuration is consistent as shipped
        run(["/usr/sbin/postino", "check"])
        if shutil.which("systemd-analyze"):
            v = run(["systemd-analyze", "verify", "/lib/systemd/system/postino.service"],
                    check=False)
            assert v.returncode == 0 and v.stderr.strip() == "", v.stderr
        if shutil.which("logrotate"):
            run(["logrotate", "-d", "/etc/logrotate.d/postino"])

        port = h.free_port()
        configure_for_test(port, sink.port, dns.port)
        run(["/usr/sbin/postino", "start"], timeout=120)
        h.wait_until(lambda: h.smtp_port_accepts(port), timeout=60,
                     what="the installed postino accepting on its port")
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.sendmail("s@sender.test", ["pkg@example.test"],
                       b"Subject: from the package\r\n\r\ninstalled and running\r\n")
        check_spool_and_owner()
        msgs = sink.wait_to("pkg@example.test", timeout=60)
        assert b"installed and running" in msgs[0].content
        log = open("/var/spool/postino/maillog").read()
        assert "status=sent" in log, log[-3000:]
        run(["/usr/sbin/postino", "stop"], timeout=120)
    finally:
        purge()
    assert not dpkg_installed("postino")
    r = subprocess.run(["dpkg-query", "-W", "postino"], capture_output=True, text=True)
    assert r.returncode != 0 or r.stdout.strip() in ("postino", "postino\t"), r.stdout
    for gone in ("/etc/postino", "/var/spool/postino", "/usr/lib/postino", "/usr/sbin/postino",
                 "/lib/systemd/system/postino.service", "/etc/logrotate.d/postino"):
        assert not os.path.exists(gone), gone + " left behind by dpkg --purge"
