#!/usr/bin/python3
"""dkim_bench.py - what DKIM signing costs postino, and Postfix with OpenDKIM.

    smtp-source  ->  MTA  ->  smtp-sink          (bench.py's set-up)

Five MTAs, each a fresh instance per run, in turns within each round:

  postino                bench.py's postino, unsigned
  postino+dkim           the same, signing in smtpd (dkim_key_maps, RSA-2048)
  postfix                bench.py's private Postfix, unsigned
  postfix+opendkim       the same with Debian's opendkim as its milter over
                         TCP (smtpd_milters = inet:127.0.0.1:PORT), the
                         set-up most Postfix sites run
  postfix+opendkim-unix  the same over a UNIX-domain socket (Debian's
                         packaged default, local:/run/opendkim/...), which
                         is markedly faster on loopback: measured too, so
                         the comparison does not rest on Postfix's slower
                         variant

Both signers use one RSA-2048 key, relaxed/relaxed, From over-signed, and
sign because the client (smtp-source on 127.0.0.1) is in mynetworks /
InternalHosts and the From: domain smtp-source writes (From:
<bench@example.com>) has a key. For each message size (4 KB and 100 KB by
default) the script reports the median msg/s of each MTA (accepted and end
to end, as bench.py measures them), the ratios postino+dkim / postfix+
opendkim(-unix), and each MTA's signing cost: signed msg/s relative to its
own unsigned figure from the same rounds.

The bench must not be able to measure unsigned mail by accident. Before the
timed rounds of each size, each signing MTA (a fresh instance, configured
exactly as for the timed runs) relays one message to a capturing SMTP
server (aiosmtpd); the captured message must carry a DKIM-Signature with
d=example.com and a=rsa-sha256 that dkimpy verifies against the public key
(served by the dnsfunc, no DNS). Postfix is also told to refuse mail when
the milter fails (milter_default_action = tempfail) and OpenDKIM to refuse
what it cannot sign, so a broken signer fails the run (smtp-source exits
non-zero on any non-250 reply).

Run as root, like bench.py. Needs opendkim, python3-dkim, python3-aiosmtpd
(make deps).
"""
import argparse
import base64
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

OPENDKIM = "/usr/sbin/opendkim"
OPENSSL = "/usr/bin/openssl"
DOMAIN = "example.com"      # the domain of smtp-source's From: <bench@example.com>
SELECTOR = "bench"
OPENDKIM_DIR = "/run"       # root's, 0755: a path opendkim accepts as safe
MTAS = ("postino", "postino+dkim", "postfix", "postfix+opendkim", "postfix+opendkim-unix")


class Key:
    """One RSA-2048 key pair: key.pem (root, 0600) and its TXT record."""

    def __init__(self, root):
        self.dir = os.path.join(root, "keys")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.pem = os.path.join(self.dir, "key.pem")
        bench.run([OPENSSL, "genpkey", "-algorithm", "RSA", "-pkeyopt",
                   "rsa_keygen_bits:2048", "-out", self.pem])
        os.chmod(self.pem, 0o600)
        der = subprocess.run([OPENSSL, "pkey", "-in", self.pem, "-pubout", "-outform", "DER"],
                             stdout=subprocess.PIPE, check=True).stdout
        self.txt = ("v=DKIM1; k=rsa; p=%s" % base64.b64encode(der).decode()).encode()

    def dnsfunc(self, name, timeout=5):
        """dkimpy's DNS lookup: our TXT record for SELECTOR._domainkey.DOMAIN."""
        if isinstance(name, bytes):
            name = name.decode()
        if name.rstrip(".").lower() == "%s._domainkey.%s" % (SELECTOR, DOMAIN):
            return self.txt
        return None


def opendkim_user():
    """opendkim runs as its own user (Debian creates it), as in production;
    as root only where that user does not exist."""
    try:
        pwd.getpwnam("opendkim")
        return "opendkim"
    except KeyError:
        return None


class PostinoDkim(bench.Postino):
    """bench.Postino signing in smtpd with the key in dkim_key_maps."""
    name = "postino+dkim"

    def __init__(self, root, bindir, sink_port, key):
        super().__init__(root, bindir, sink_port)
        table = os.path.join(self.conf, "dkim_keys")
        with open(table, "w") as f:
            f.write("%s  %s:rsa:%s\n" % (DOMAIN, SELECTOR, key.pem))
        bench.run([os.path.join(bindir, "postino"), "-c", self.conf, "map", "build", table])
        with open(os.path.join(self.conf, "main.cf"), "a") as f:
            f.write("# DKIM: sign mail from mynetworks whose From: domain has a key\n"
                    "dkim_key_maps = hash:%s\n" % table)


class OpenDkim:
    """A private opendkim milter on 127.0.0.1:port, in the foreground.
    opendkim refuses a configuration or key file on a path that others may
    write (such as /tmp), so its files live in a directory of their own
    under OPENDKIM_DIR, removed by stop(); its output goes to logdir."""

    def __init__(self, logdir, key, socket_type="inet"):
        self.dir = tempfile.mkdtemp(prefix="postino-dkim-bench-", dir=OPENDKIM_DIR)
        os.chmod(self.dir, 0o755)
        self.port = bench.free_port()
        if socket_type == "unix":
            # Debian's default: a UNIX-domain socket the MTA's group may use
            self.socket = os.path.join(self.dir, "opendkim.sock")
            self.milter = "unix:" + self.socket
            self.odk_socket = "local:" + self.socket
        else:
            self.socket = None
            self.milter = "inet:127.0.0.1:%d" % self.port
            self.odk_socket = "inet:%d@127.0.0.1" % self.port
        self.conf = os.path.join(self.dir, "opendkim.conf")
        self.log = os.path.join(logdir, "opendkim.out")
        self.proc = None
        user = opendkim_user()
        pem = os.path.join(self.dir, "key.pem")
        shutil.copyfile(key.pem, pem)
        os.chmod(pem, 0o600)
        if user:
            shutil.chown(pem, user=user)
        with open(self.conf, "w") as f:
            f.write("""# written by dkim_bench.py
Mode                    s
Domain                  %(domain)s
Selector                %(selector)s
KeyFile                 %(key)s
SignatureAlgorithm      rsa-sha256
Canonicalization        relaxed/relaxed
OversignHeaders         From
InternalHosts           127.0.0.1
Socket                  %(socket)s
PidFile                 %(dir)s/opendkim.pid
Background              no
Syslog                  no
UMask                   000
%(userid)s
# what it cannot sign is refused, not passed on unsigned
On-Default              tempfail
""" % {"domain": DOMAIN, "selector": SELECTOR, "key": pem, "socket": self.odk_socket,
                "dir": self.dir, "userid": ("UserID %s" % user) if user else ""})
        if user:
            shutil.chown(self.dir, user=user)

    def start(self):
        out = open(self.log, "w")
        self.proc = subprocess.Popen([OPENDKIM, "-f", "-x", self.conf],
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        if not self.wait_listening(15):
            raise bench.BenchError("opendkim did not start on port %d: %s"
                                   % (self.port, bench.tail(self.log)))

    def wait_listening(self, timeout):
        if self.socket is None:
            return bench.wait_port(self.port, timeout) and self.proc.poll() is None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(self.socket):
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostfixOpenDkim(bench.Postfix):
    """bench.Postfix with opendkim as its smtpd milter."""
    name = "postfix+opendkim"

    def __init__(self, root, sink_port, key, socket_type):
        super().__init__(root, sink_port)
        self.name = "postfix+opendkim" + ("-unix" if socket_type == "unix" else "")
        self.milter = OpenDkim(self.dir, key, socket_type)
        with open(os.path.join(self.conf, "main.cf"), "a") as f:
            f.write("# DKIM through opendkim; no mail passes unsigned when it fails\n"
                    "smtpd_milters = %s\n"
                    "non_smtpd_milters =\n"
                    "milter_default_action = tempfail\n" % self.milter.milter)

    def start(self):
        self.milter.start()
        super().start()

    def stop(self):
        try:
            super().stop()
        finally:
            self.milter.stop()


def make_mta(name, root, args, key, sink_port):
    if name == "postino":
        return bench.Postino(root, args.bin, sink_port)
    if name == "postino+dkim":
        return PostinoDkim(root, args.bin, sink_port, key)
    if name == "postfix":
        return bench.Postfix(root, sink_port)
    return PostfixOpenDkim(root, sink_port, key, "unix" if name.endswith("-unix") else "inet")


class Capture:
    """An SMTP server (aiosmtpd, no PIPELINING or CHUNKING) that keeps what
    it receives, so one relayed message can be checked."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        self.messages = []
        self.port = bench.free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        return "250 OK captured"

    def wait(self, count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.messages) >= count

    def stop(self):
        self.controller.stop()


def check_signature(raw, key):
    """'' when raw carries a valid RSA-SHA256 DKIM signature of DOMAIN by
    our key, else what is wrong."""
    import dkim
    headers, _ = dkim.rfc822_parse(raw)
    sigs = [v for k, v in headers if k.lower() == b"dkim-signature"]
    if not sigs:
        return "no DKIM-Signature header"
    tags = dkim.util.parse_tag_value(sigs[0])
    if tags.get(b"d") != DOMAIN.encode() or tags.get(b"a") != b"rsa-sha256":
        return "signature is d=%r a=%r" % (tags.get(b"d"), tags.get(b"a"))
    if not dkim.verify(raw, dnsfunc=key.dnsfunc, minkey=2048):
        return "dkimpy does not verify the signature"
    return ""


def verify_signer(name, root, args, key, size):
    """One message of size bytes through a fresh instance of the signing MTA
    name to a capturing server; raises BenchError unless it verifies."""
    cap = Capture()
    mta = None
    try:
        mta = make_mta(name, root, args, key, cap.port)
        mta.start()
        bench.run([bench.SMTP_SOURCE, "-d", "-s", "1", "-m", "1", "-l", str(size),
                   "-f", bench.SENDER, "-t", bench.RECIPIENT, "-M", "bench.example.com",
                   "127.0.0.1:%d" % mta.port], timeout=60)
        if not cap.wait(1, 60):
            raise bench.BenchError("%s: the test message did not arrive within 60 s" % name)
        why = check_signature(cap.messages[0], key)
        if why:
            with open(os.path.join(root, "captured.eml"), "wb") as f:
                f.write(cap.messages[0])
            raise bench.BenchError("%s: %s (message in %s/captured.eml)" % (name, why, root))
        print("%s: a %d-byte message relayed by it verifies (dkimpy, d=%s, s=%s, rsa-sha256)"
              % (name, size, DOMAIN, SELECTOR), flush=True)
    except bench.BenchError:
        if mta is not None:
            sys.stderr.write("--- last lines of %s ---\n%s" % (mta.log, bench.tail(mta.log)))
        raise
    finally:
        if mta is not None:
            mta.stop()
        cap.stop()


def run_one(name, root, args, key, size, messages):
    """(accepted s, end-to-end s) of one fresh instance, as bench.py measures."""
    os.sync()       # the previous run's spool is still being written back
    time.sleep(2)
    os.makedirs(root)
    os.chmod(root, 0o755)
    sink = bench.Sink(messages)
    mta = None
    try:
        mta = make_mta(name, root, args, key, sink.port)
        mta.start()
        m = argparse.Namespace(sessions=args.sessions, messages=messages, size=size,
                               timeout=args.timeout)
        t = bench.measure(mta, sink, m)
        mta.stop()
        signed = count_signed(mta)
        if signed is not None and signed < messages:
            raise bench.BenchError("%s signed %d of %d messages" % (name, signed, messages))
        return t
    except bench.BenchError:
        if mta is not None:
            sys.stderr.write("--- last lines of %s ---\n%s" % (mta.log, bench.tail(mta.log)))
        raise
    finally:
        if mta is not None:
            mta.stop()
        sink.kill()


def count_signed(mta):
    """How many messages postino's smtpd logged as signed ("ID: dkim-signed
    d=DOMAIN ..."), or None for an MTA that does not say (OpenDKIM logs only
    to syslog; there it is milter_default_action = tempfail that keeps
    unsigned mail out)."""
    if not isinstance(mta, PostinoDkim):
        return None
    n = 0
    with open(mta.log, errors="replace") as f:
        for line in f:
            if ": dkim-signed d=%s " % DOMAIN in line:
                n += 1
    return n


def report(args, sizes, mtas, results):
    """results[(size, name)] = [(accept s, e2e s), ...]; medians of rounds."""
    print()
    print("machine: %s" % bench.machine())
    print("DKIM: RSA-2048, rsa-sha256, relaxed/relaxed; %d sessions, %d round(s), medians"
          % (args.sessions, args.rounds))
    print("%7s %6s %-21s %10s %12s | %-24s" % ("size", "msgs", "MTA", "accepted/s",
                                               "end-to-end/s", "signed/unsigned, e2e"))
    for size, messages in sizes:
        med = {}
        for name in mtas:
            rows = results[(size, name)]
            med[name] = (messages / statistics.median(r[0] for r in rows),
                         messages / statistics.median(r[1] for r in rows))
        for name in mtas:
            cost = ""
            base = name.split("+")[0]
            if "+" in name and base in med:
                cost = "%.2f (%+.0f%%)" % (med[name][1] / med[base][1],
                                           100 * (med[name][1] / med[base][1] - 1))
            print("%7d %6d %-21s %10.0f %12.0f | %s" % (size, messages, name, med[name][0],
                                                       med[name][1], cost))
        for other in ("postfix+opendkim", "postfix+opendkim-unix"):
            if "postino+dkim" in med and other in med:
                a, b = med["postino+dkim"], med[other]
                print("%7d %6d signing, postino+dkim / %s: accepted %.2f, end to end %.2f"
                      % (size, messages, other, a[0] / b[0], a[1] / b[1]))
        for name in mtas:
            print("%7s %6s %-21s rounds e2e msg/s: %s" % ("", "", name, " ".join(
                "%.0f" % (messages / r[1]) for r in results[(size, name)])))


def parse_args():
    ap = argparse.ArgumentParser(description="DKIM signing: postino vs Postfix+OpenDKIM")
    ap.add_argument("--bin", required=True, help="directory with postino's programs")
    ap.add_argument("--rounds", type=int, default=3, help="runs per size and MTA")
    ap.add_argument("--sizes", default="4096:5000,102400:1000",
                    help="SIZE:MESSAGES pairs, comma separated")
    ap.add_argument("--sessions", type=int, default=20, help="parallel SMTP connections")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per run")
    ap.add_argument("--only", choices=["postino", "postfix"], help="measure one MTA only")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return ap.parse_args()


def main():
    args = parse_args()
    args.bin = os.path.abspath(args.bin)
    mtas = [m for m in MTAS if args.only in (None, m.split("+")[0])]
    tools = [bench.SMTP_SOURCE, bench.SMTP_SINK, OPENSSL]
    if "postino" in mtas:
        tools.append(os.path.join(args.bin, "postino"))
    if "postfix" in mtas:
        tools += [bench.POSTFIX, OPENDKIM]
    for tool in tools:
        if not os.access(tool, os.X_OK):
            sys.exit("dkim_bench: %s is missing (run make deps and make all)" % tool)
    try:
        import dkim  # noqa: F401
        import aiosmtpd  # noqa: F401
    except ImportError as e:
        sys.exit("dkim_bench: %s (run make deps; use /usr/bin/python3)" % e)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sizes = [tuple(int(x) for x in pair.split(":")) for pair in args.sizes.split(",")]
    root = tempfile.mkdtemp(prefix="postino-dkim-bench-")
    os.chmod(root, 0o755)   # the mail users must traverse it
    results = {}
    ok = False
    try:
        key = Key(root)
        for size, messages in sizes:
            for name in mtas:
                if "+" in name:
                    d = os.path.join(root, "verify-%s-%d" % (name, size))
                    os.makedirs(d)
                    os.chmod(d, 0o755)
                    verify_signer(name, d, args, key, size)
            for r in range(args.rounds):
                # alternate the order, so drift over a round hits all alike
                for name in (mtas if r % 2 == 0 else mtas[::-1]):
                    d = os.path.join(root, "%s-%d-%d" % (name, size, r + 1))
                    t = run_one(name, d, args, key, size, messages)
                    results.setdefault((size, name), []).append(t)
                    print("size %6d round %d %-21s accepted %7.0f msg/s, end to end %7.0f msg/s"
                          % (size, r + 1, name, messages / t[0], messages / t[1]), flush=True)
        ok = True
    except (bench.BenchError, subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        sys.stderr.write("dkim_bench: FAILED: %s\n" % e)
    finally:
        if args.keep or not ok:
            print("dkim_bench: files kept in %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if ok:
        report(args, sizes, mtas, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
