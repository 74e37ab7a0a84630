"""Submission end to end (issue #3 and the audit that followed it).

Whole-system tests (postino_harness: master, smtpd, qmgr, delivery, bounce
and anvil as master runs them, aiosmtpd sinks, dnsmasq), unlike
test_smtpd_policy.py which runs a lone smtpd:
  * submission (STARTTLS + AUTH) and smtps (wrapper mode) rows from
    master.cf with -o overrides, key and sasldb readable only by their
    owners, mail relayed by swaks reaches the sink; TLS 1.1 is refused;
  * smtpd_client_connection_count_limit holds across two smtpd processes.
The client is always 127.0.0.1, so mynetworks is moved elsewhere where the
client must be an outsider.
"""
import os
import re
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import postino_harness as h
from test_smtpd_protocol import Raw

OUTSIDE = "10.0.0.0/8"   # mynetworks without the test client
PASSWORD = "s3cret pw"
HOST = "postino.test"    # the harness's myhostname: the SASL realm too


# ================================================================ submission / smtps

@pytest.fixture(scope="module")
def secrets():
    """Key 0600 root (read before the privilege drop), certificate, and a
    sasldb owned by the mail owner with mode 0600 (README), in a dir the
    mail owner can traverse."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the key must be unreadable by the mail owner")
    for tool in ("swaks", "saslpasswd2", "openssl"):
        assert shutil.which(tool), "%s is not installed (make deps)" % tool
    d = h.make_tmpdir("front2-secrets-")
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=" + HOST,
                    "-addext", "subjectAltName=DNS:" + HOST],
                   check=True, capture_output=True, timeout=60)
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    os.chmod(crt, 0o644)
    db = os.path.join(d, "sasldb2")
    subprocess.run(["saslpasswd2", "-c", "-p", "-f", db, "-u", HOST, "user"],
                   input=PASSWORD.encode(), check=True, timeout=30)
    pw = pwd.getpwnam(h.MAIL_OWNER)
    os.chown(db, pw.pw_uid, pw.pw_gid)
    os.chmod(db, 0o600)
    with open(os.path.join(d, "smtpd.conf"), "w") as f:
        f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\n"
                "mech_list: PLAIN LOGIN\n" % db)
    yield {"smtpd_tls_cert_file": crt, "smtpd_tls_key_file": key,
           "cyrus_sasl_config_path": d}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def msa(postino_factory, secrets):
    """An instance with Postfix's submission and smtps rows (plus the
    default port 25-style smtpd row of the harness)."""
    sub, smtps = h.free_port(), h.free_port()
    while smtps == sub:
        smtps = h.free_port()
    rows = ["127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_security_level=encrypt "
            "-o smtpd_sasl_auth_enable=yes "
            "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject" % sub,
            "127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_wrappermode=yes "
            "-o smtpd_sasl_auth_enable=yes" % smtps]
    main = dict(secrets, mynetworks=OUTSIDE, smtpd_sasl_failure_delay="0")
    p = postino_factory(main=main, master_extra=rows)
    for port in (sub, smtps):
        h.wait_until(lambda: _listening(port), what="port %d" % port)
    p.sub_port, p.smtps_port = sub, smtps
    return p


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def swaks(port, *args, to="rcpt@example.test"):
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", "user@sender.test",
           "--to", to, "--timeout", "20"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


AUTH = ("--auth", "PLAIN", "--auth-user", "user", "--auth-password", PASSWORD)


def test_submission_and_smtps_deliver(msa, sink):
    p = msa
    # the key really is root-only: the daemons read it before dropping privileges
    st = os.stat(p.main["smtpd_tls_key_file"])
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    owner = pwd.getpwnam(h.MAIL_OWNER).pw_uid

    def all_dropped():  # processes still starting up may be root a moment
        pids = p.pids(("smtpd",)).get("smtpd", [])
        return len(pids) >= 3 and all(h.proc_ids(pid)[0][1] == owner for pid in pids)
    h.wait_until(all_dropped, what="every smtpd running as " + h.MAIL_OWNER)
    out = swaks(p.sub_port, "--tls", *AUTH, "--header", "Subject: via-submission",
                to="sub@example.test")
    assert out.returncode == 0, out.stdout + out.stderr
    m = sink.wait_to("sub@example.test")[0]
    assert m.msg["Subject"] == "via-submission"
    assert "with ESMTPSA" in m.msg["Received"], m.msg["Received"]
    # without AUTH: refused, nothing queued or delivered
    out = swaks(p.sub_port, "--tls", to="noauth@example.test")
    assert out.returncode != 0
    assert "554 5.7.1" in out.stdout or "530 5.7.0" in out.stdout, out.stdout
    # without TLS: AUTH is not offered, MAIL demands STARTTLS first
    out = swaks(p.sub_port, *AUTH, to="notls@example.test")
    assert out.returncode != 0 and "did not advertise authentication" in out.stderr, out.stderr
    out = swaks(p.sub_port, to="notls@example.test")
    assert out.returncode != 0 and "530 5.7.0" in out.stdout, out.stdout
    # smtps: TLS from the first byte
    out = swaks(p.smtps_port, "--tlsc", *AUTH, "--header", "Subject: via-smtps",
                to="smtps@example.test")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sink.wait_to("smtps@example.test")[0].msg["Subject"] == "via-smtps"
    # an outsider without AUTH may not relay through the smtps port either
    out = swaks(p.smtps_port, "--tlsc", to="noauth2@example.test")
    assert out.returncode != 0 and "554 5.7.1" in out.stdout, out.stdout
    time.sleep(1)
    assert not sink.to("noauth@example.test") and not sink.to("noauth2@example.test")
    assert not sink.to("notls@example.test")
    assert p.log_lines(r"client=.*sasl_method=PLAIN, sasl_username=user")


def _tls_hello(port, ctx):
    """STARTTLS on the submission port with ctx: the TLS version, or the
    ssl error."""
    r = Raw(port, 10)
    try:
        assert r.recv_reply().startswith(b"220")
        assert r.cmd(b"EHLO c.test\r\n").startswith(b"250")
        assert r.cmd(b"STARTTLS\r\n").startswith(b"220")
        r.s = ctx.wrap_socket(r.s)
        return r.s.version()
    except (ssl.SSLError, ConnectionError) as e:
        return e
    finally:
        r.close()


def _client_ctx(maxv):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # OpenSSL 3 refuses TLS < 1.2 at security level 1 on the client side
    # too: level 0 makes the client able to speak TLS 1.1, so a failure
    # comes from the server's minimum.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maxv
    return ctx


def _tls11_server_ok(secrets):
    """Proof that this client can speak TLS 1.1 at all: openssl s_server."""
    port = h.free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
                            "-cert", secrets["smtpd_tls_cert_file"],
                            "-key", secrets["smtpd_tls_key_file"], "-tls1_1",
                            "-cipher", "DEFAULT:@SECLEVEL=0", "-naccept", "1", "-quiet"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        h.wait_until(lambda: _listening_probe_free(srv, port), timeout=10,
                     what="openssl s_server")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with _client_ctx(ssl.TLSVersion.TLSv1_1).wrap_socket(s) as t:
                return t.version()
    except (ssl.SSLError, OSError) as e:
        return e
    finally:
        srv.kill()
        srv.wait()


def _listening_probe_free(proc, port):
    # ss would need iproute2; read /proc/net/tcp for a LISTEN socket on port
    if proc.poll() is not None:
        raise RuntimeError("openssl s_server exited")
    with open("/proc/net/tcp") as f:
        return any(ln.split()[1].endswith(":%04X" % port) and ln.split()[3] == "0A"
                   for ln in f.readlines()[1:])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLS 1.1 on purpose
def test_tls_minimum_default(msa, secrets):
    assert _tls11_server_ok(secrets) == "TLSv1.1"
    got = _tls_hello(msa.sub_port, _client_ctx(ssl.TLSVersion.TLSv1_1))
    assert isinstance(got, Exception), got
    # refused for its version (not, say, for the signature algorithms)
    msa.wait_log(r"SSL_accept error from unknown\[127\.0\.0\.1\]: unsupported protocol")
    got = _tls_hello(msa.sub_port, _client_ctx(ssl.TLSVersion.TLSv1_2))
    assert got == "TLSv1.2", got
    # the smtpd that refused the handshake is still serving
    assert _tls_hello(msa.sub_port, _client_ctx(ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"


# ================================================================ limits across processes

def _greet(port):
    r = Raw(port, 10)
    return r, r.recv_reply()


def test_connection_count_limit_across_processes(postino_factory):
    p = postino_factory(start=False, smtpd_procs=2,
                        main={"mynetworks": OUTSIDE, "smtpd_client_event_limit_exceptions": "",
                              "smtpd_client_connection_count_limit": "3"})
    if not any(r.split()[:2] == ["anvil", "unix"] for r in p.master_cf().splitlines()):
        p.master_extra.append("anvil unix - - n - 1 anvil")
        p.write_config()
    p.start()
    pids = h.wait_until(lambda: (lambda l: l if len(l) == 2 else None)(
        p.pids(("smtpd",)).get("smtpd", [])), what="two smtpd processes")
    time.sleep(0.5)  # the start-up probe's connection is released by anvil
    one, two = pids
    conns = []
    try:
        # two connections to one process, the third to the other: each
        # process alone sees fewer than 3, only anvil sees them all
        os.kill(one, signal.SIGSTOP)
        for _ in range(2):
            conns.append(_greet(p.port))
        os.kill(one, signal.SIGCONT)
        os.kill(two, signal.SIGSTOP)
        conns.append(_greet(p.port))
        fourth, g4 = _greet(p.port)
        os.kill(two, signal.SIGCONT)
        assert [g[:3] for _, g in conns] == [b"220"] * 3, conns
        assert g4 == b"421 4.7.0 %s Error: too many connections from 127.0.0.1\r\n" % \
            HOST.encode(), g4
        assert fourth.closed()
        connects = p.log_lines(r"smtpd\[\d+\]: connect from ")
        on = {int(ln.split("smtpd[")[1].split("]")[0]) for ln in connects[-4:]}
        assert on == {one, two}, connects
        p.wait_log(r"Connection concurrency limit exceeded: 4 from unknown\[127\.0\.0\.1\]")
        # closing one lets a new client in (on whichever process)
        r, _ = conns.pop(0)
        r.cmd(b"QUIT\r\n")
        r.close()
        time.sleep(0.5)
        r5, g5 = _greet(p.port)
        conns.append((r5, g5))
        assert g5.startswith(b"220"), g5
        r6, g6 = _greet(p.port)
        assert g6.startswith(b"421"), g6
        r6.close()
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for r, _ in conns:
            r.close()


def test_reception_event_names_tls_and_login(postino_factory, secrets, workdir, sink):
    """The reception event (issue #11) says how the message came: the
    client, the TLS version and cipher of the session, the SASL login."""
    import json
    log = os.path.join(h.mail_owner_dir(os.path.join(workdir, "log")), "events.json")
    sub = h.free_port()
    rows = ["127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_security_level=encrypt "
            "-o smtpd_sasl_auth_enable=yes "
            "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject" % sub,
            "events unix - - n - 1 events"]
    main = dict(secrets, mynetworks=OUTSIDE, event_log=log)
    p = postino_factory(main=main, master_extra=rows)
    h.wait_until(lambda: _listening(sub), what="port %d" % sub)
    out = swaks(sub, "--tls", *AUTH, to="ev@example.test")
    assert out.returncode == 0, out.stdout + out.stderr
    sink.wait_to("ev@example.test")
    est = p.wait_log(r"smtpd\[\d+\]: .*TLS connection established from .*: (TLSv1\.[23]) "
                     r"with cipher (\S+)")[0]
    m = re.search(r": (TLSv1\.[23]) with cipher (\S+)", est)

    def reception():
        try:
            with open(log) as f:
                evs = [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return None
        return [e for e in evs if e["type"] == "reception" and e["recipient"] == "ev@example.test"]
    ev = h.wait_until(reception, what="the reception event")[0]
    assert (ev["tls_version"], ev["tls_cipher"]) == (m.group(1), m.group(2))
    assert ev["sasl_username"].startswith("user") and ev["client_ip"] == "127.0.0.1"
    assert ev["sender"] == "user@sender.test"
