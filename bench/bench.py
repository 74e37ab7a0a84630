#!/usr/bin/python3
"""bench.py - postino and Postfix side by side on loopback.

    smtp-source  ->  MTA (postino | a private Postfix instance)  ->  smtp-sink

One run starts a fresh instance of each MTA in a temp dir (one after the
other, never at the same time, so they do not compete for the 2 cores),
sends --messages messages of --size bytes over --sessions persistent SMTP
connections, and reports two figures per MTA:

  accepted    messages / wall time of smtp-source. smtp-source exits when
              every message got its 250 (without -A it aborts on any other
              reply, which fails the run), so this is the rate at which the
              MTA made mail durable and acknowledged it.
  end-to-end  messages / time from the start of smtp-source until the sink
              has received every message. Each MTA relays to its own
              smtp-sink started with "-M N": smtp-sink exits by itself once
              it has received N messages, so its exit is the moment the
              last message arrived. This needs no log parsing and cannot
              count a message that was only logged; duplicates (at-least-
              once after a crash) would only make it finish earlier, and
              the run has no crashes. smtp-sink exits on the Nth final dot
              before it answers it, so each MTA logs that last message as
              deferred ("lost connection ... while sending end of data"):
              its content did arrive, which is what is measured.

Run as root (both MTAs drop to their mail users). Python 3 stdlib only.
Exit status: 0 when both runs completed, 1 when a run failed or did not
finish within --timeout seconds. Both MTAs are stopped and the sinks
killed on every path out (finally blocks, SIGTERM handler).
"""
import argparse
import statistics
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
POSTFIX_MASTER_CF = "/etc/postfix/master.cf"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENDER = "bench@example.com"
RECIPIENT = "rcpt@example.net"


class BenchError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout):
    """True once something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def run(cmd, timeout=120, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise BenchError("%s failed (exit %d): %s" % (" ".join(cmd), p.returncode,
                                                      p.stdout.strip()))
    return p


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log at %s)\n" % path


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%d CPUs, %s, %s %s" % (os.cpu_count() or 0, model, platform.system(),
                                   platform.release())


def kill_pidfile(path):
    """Last resort when a stop command failed: SIGKILL the master (its
    daemons notice that their parent is gone and exit)."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
        if pid > 1:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


class Sink:
    """One smtp-sink that exits after `count` messages."""

    def __init__(self, count):
        self.port = free_port()
        cmd = [SMTP_SINK, "-M", str(count), "-m", "1024", "-t", "300"]
        if os.getuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += ["127.0.0.1:%d" % self.port, "1024"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        if not wait_port(self.port, 10):
            self.kill()
            raise BenchError("smtp-sink did not start on port %d" % self.port)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Postino:
    name = "postino"

    def __init__(self, root, bindir, sink_port):
        self.dir = os.path.join(root, "postino")
        self.conf = os.path.join(self.dir, "conf")
        os.makedirs(self.conf)
        self.bindir = bindir
        self.port = free_port()
        self.log = os.path.join(self.dir, "maillog")
        self.started = False
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("""# written by bench.py
queue_directory = %(dir)s/spool
maillog_file = %(log)s
myhostname = postino-bench.localdomain
mydestination =
relayhost = [127.0.0.1]:%(sink)d
mynetworks = 127.0.0.0/8
# generous limits: the benchmark measures throughput, not policy
message_size_limit = 104857600
smtpd_client_connection_limit = 10000
smtpd_recipient_limit = 10000
qmgr_message_active_limit = 100000
qmgr_message_recipient_limit = 100000
default_destination_concurrency_limit = 20
default_process_concurrency = 100
smtp_connection_reuse_count_limit = 0
""" % {"dir": self.dir, "log": self.log, "sink": sink_port})
        # the shipped classifier rules, where bounce_classifier_rules
        # expects them (next to main.cf); master refuses to start without
        shutil.copyfile(os.path.join(REPO, "conf", "bounce_classifier_rules"),
                        os.path.join(self.conf, "bounce_classifier_rules"))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write("""# written by bench.py
127.0.0.1:%d inet n - n - 2 smtpd
qmgr   unix - - n 300 1 qmgr
smtp   unix - - n -   2 delivery
bounce unix - - n -   1 bounce
""" % self.port)

    def start(self):
        self.started = True
        run([os.path.join(self.bindir, "postino"), "-c", self.conf, "start"], timeout=60)
        if not wait_port(self.port, 30):
            raise BenchError("postino smtpd is not listening on port %d" % self.port)

    def stop(self):
        if self.started:
            self.started = False
            try:
                run([os.path.join(self.bindir, "postino"), "-c", self.conf, "stop"],
                    timeout=90, check=False)
            finally:
                kill_pidfile(os.path.join(self.dir, "spool", "pid", "master.pid"))


def postfix_master_cf(port):
    """Debian's master.cf with one smtpd on 127.0.0.1:port, no other inet
    service and no chroot (a private spool has no /etc copies for it)."""
    out = []
    skipping = False
    with open(POSTFIX_MASTER_CF) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                out.append(line)
                continue
            if line[0] in " \t":
                if not skipping:
                    out.append(line)
                continue
            fields = line.split()
            skipping = False
            if len(fields) >= 8 and fields[1] == "inet":
                if fields[0] != "smtp":
                    skipping = True
                    continue
                fields[0] = "127.0.0.1:%d" % port
            if len(fields) >= 8:
                fields[4] = "n"
                line = " ".join(fields) + "\n"
            out.append(line)
    return "".join(out)


class Postfix:
    name = "postfix"

    def __init__(self, root, sink_port):
        self.dir = os.path.join(root, "postfix")
        self.conf = os.path.join(self.dir, "conf")
        os.makedirs(self.conf)
        self.port = free_port()
        self.log = os.path.join(self.dir, "maillog")
        self.started = False
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("""# written by bench.py: a private instance, apart from the system's
compatibility_level = 3.6
queue_directory = %(dir)s/spool
data_directory = %(dir)s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-bench.localdomain
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:%(sink)d
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtputf8_enable = no
biff = no
maillog_file = %(log)s
maillog_file_prefixes = %(dir)s
message_size_limit = 104857600
""" % {"dir": self.dir, "log": self.log, "sink": sink_port})
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(postfix_master_cf(self.port))

    def start(self):
        self.started = True
        # "check" creates the missing queue directories with Postfix's own
        # ownership rules (post-install create-missing).
        os.makedirs(os.path.join(self.dir, "spool"), mode=0o755, exist_ok=True)
        data = os.path.join(self.dir, "data")
        os.makedirs(data, mode=0o700, exist_ok=True)
        if os.getuid() == 0:
            shutil.chown(data, user="postfix")
        run([POSTFIX, "-c", self.conf, "check"], timeout=60, check=False)
        run([POSTFIX, "-c", self.conf, "start"], timeout=60)
        if not wait_port(self.port, 30):
            raise BenchError("postfix smtpd is not listening on port %d" % self.port)

    def stop(self):
        if not self.started:
            return
        self.started = False
        run([POSTFIX, "-c", self.conf, "stop"], timeout=60, check=False)
        pidfile = os.path.join(self.dir, "spool", "pid", "master.pid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read().strip() or 0), 0)
            except (OSError, ValueError):
                return
            time.sleep(0.2)
        run([POSTFIX, "-c", self.conf, "abort"], timeout=30, check=False)
        kill_pidfile(pidfile)


def measure(mta, sink, args):
    """Returns (accepted seconds, end-to-end seconds)."""
    cmd = [SMTP_SOURCE, "-d", "-s", str(args.sessions), "-m", str(args.messages),
           "-l", str(args.size), "-f", SENDER, "-t", RECIPIENT,
           "-M", "bench.example.com", "127.0.0.1:%d" % mta.port]
    t0 = time.monotonic()
    try:
        src = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s: smtp-source did not finish within %d s" % (mta.name, args.timeout))
    t_accept = time.monotonic() - t0
    if src.returncode != 0:
        raise BenchError("%s: smtp-source failed (exit %d): %s"
                         % (mta.name, src.returncode, src.stdout.strip()[-500:]))
    left = args.timeout - t_accept
    try:
        sink.proc.wait(timeout=max(left, 1))
    except subprocess.TimeoutExpired:
        raise BenchError("%s: the sink did not receive all %d messages within %d s"
                         % (mta.name, args.messages, args.timeout))
    t_e2e = time.monotonic() - t0
    if sink.proc.returncode != 0:
        raise BenchError("%s: smtp-sink failed (exit %d): %s"
                         % (mta.name, sink.proc.returncode, sink.proc.stderr.read()[-500:]))
    return t_accept, t_e2e


def bench_one(make_mta, root, args):
    sink = Sink(args.messages)
    mta = None
    try:
        mta = make_mta(root, sink.port)
        print("%s: starting (smtpd port %d, sink port %d, dir %s)"
              % (mta.name, mta.port, sink.port, mta.dir), flush=True)
        mta.start()
        t_accept, t_e2e = measure(mta, sink, args)
        print("%s: accepted in %.2f s, delivered in %.2f s" % (mta.name, t_accept, t_e2e),
              flush=True)
        return t_accept, t_e2e
    except BenchError:
        if mta is not None:
            sys.stderr.write("--- last lines of %s ---\n%s" % (mta.log, tail(mta.log)))
        raise
    finally:
        if mta is not None:
            mta.stop()
        sink.kill()


def report(args, results):
    """results: name -> list of (accept s, e2e s), one per round. The
    headline is the median round of each MTA (machines are noisy), and the
    ratio of those medians; every round is printed too."""
    n = args.messages
    print()
    print("machine: %s" % machine())
    print("load: %d messages of %d bytes over %d sessions, %d round(s)"
          % (n, args.size, args.sessions, args.rounds))
    print("%-8s %5s %12s %14s %12s %14s" % ("MTA", "round", "accept s", "accepted/s", "e2e s",
                                            "end-to-end/s"))
    for name, rounds in results.items():
        for i, (ta, te) in enumerate(rounds, 1):
            print("%-8s %5d %12.2f %14.0f %12.2f %14.0f" % (name, i, ta, n / ta, te, n / te))
    med = {name: (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))
           for name, rounds in results.items()}
    for name, (ta, te) in med.items():
        print("%-8s %5s %12.2f %14.0f %12.2f %14.0f" % (name, "med", ta, n / ta, te, n / te))
    if "postino" in med and "postfix" in med:
        (pa, pe), (fa, fe) = med["postino"], med["postfix"]
        print("accepted (median): postino %.0f msg/s, postfix %.0f msg/s, ratio %.2f"
              % (n / pa, n / fa, fa / pa))
        print("end-to-end (median): postino %.0f msg/s, postfix %.0f msg/s, ratio %.2f"
              % (n / pe, n / fe, fe / pe))


def parse_args():
    ap = argparse.ArgumentParser(description="postino vs Postfix on loopback")
    ap.add_argument("--bin", required=True, help="directory with postino's programs")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096, help="message payload bytes")
    ap.add_argument("--sessions", type=int, default=20, help="parallel SMTP connections")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per MTA run")
    ap.add_argument("--only", choices=["postino", "postfix"], help="measure one MTA only")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per MTA, taken in turns; the median is reported")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return ap.parse_args()


def main():
    args = parse_args()
    args.bin = os.path.abspath(args.bin)
    for tool in (SMTP_SOURCE, SMTP_SINK, os.path.join(args.bin, "postino")):
        if not os.access(tool, os.X_OK):
            sys.exit("bench: %s is missing (run make deps and make all)" % tool)
    if args.only != "postino" and not os.access(POSTFIX, os.X_OK):
        sys.exit("bench: %s is missing (run make deps)" % POSTFIX)
    # SIGTERM (e.g. a CI timeout) unwinds through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    root = tempfile.mkdtemp(prefix="postino-bench-")
    os.chmod(root, 0o755)   # the mail users must traverse it
    results = {}
    ok = False
    try:
        for i in range(args.rounds):
            for name, make in (("postino", lambda r, sp: Postino(r, args.bin, sp)),
                               ("postfix", Postfix)):
                if args.only in (None, name):
                    # The last round's spool is still being written back:
                    # flush it first, so no round pays for another's I/O.
                    os.sync()
                    time.sleep(2)
                    rdir = os.path.join(root, "%s-%d" % (name, i + 1))
                    os.mkdir(rdir)
                    os.chmod(rdir, 0o755)
                    results.setdefault(name, []).append(bench_one(make, rdir, args))
        ok = True
    except (BenchError, subprocess.TimeoutExpired) as e:
        sys.stderr.write("bench: FAILED: %s\n" % e)
    finally:
        if args.keep or not ok:
            print("bench: files kept in %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if results:
        report(args, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
