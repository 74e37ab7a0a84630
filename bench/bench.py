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
import resource
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


TICK = os.sysconf("SC_CLK_TCK")


def proc_table():
    """pid -> (ppid, comm, (utime, stime), (cutime, cstime)) in clock ticks,
    of every process readable in /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw[raw.rindex(")") + 2:].split()
        out[int(d)] = (int(f[1]), comm, (int(f[11]), int(f[12])), (int(f[13]), int(f[14])))
    return out


def mta_cpu(master_pid):
    """comm -> (user, system) CPU ticks used so far by an MTA's master and
    everything under it; what exited children used is in the master's
    cumulative figure (the master reaps them), reported as "exited"."""
    table = proc_table()
    if master_pid not in table:
        return {}
    tree, todo = {master_pid}, [master_pid]
    children = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    cpu = {}
    for pid in tree:
        _, comm, own, reaped = table[pid]
        u, s = cpu.get(comm, (0, 0))
        cpu[comm] = (u + own[0], s + own[1])
        if pid == master_pid:
            cpu["exited"] = reaped
    return cpu


def machine_ticks():
    """(busy, all) CPU ticks of the whole machine so far, from /proc/stat:
    busy is everything but idle and iowait, on all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def children_cpu():
    """CPU seconds used by this script's reaped children (smtp-source and
    smtp-sink during a measurement)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def master_pid(mta):
    try:
        with open(os.path.join(mta.dir, "spool", "pid", "master.pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_delta(before, after):
    out = {}
    for k, (u, s) in after.items():
        u0, s0 = before.get(k, (0, 0))
        if u - u0 + s - s0 > 0:
            out[k] = (u - u0, s - s0)
    return out


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


def dist_master_cf(port):
    """The shipped conf/dist/master.cf with its port-25 smtpd on
    127.0.0.1:port and no other inet service (submission)."""
    out = []
    with open(os.path.join(REPO, "conf", "dist", "master.cf")) as f:
        for line in f:
            fields = line.split()
            if line[0] not in "# \t\n" and len(fields) >= 8 and fields[1] == "inet":
                if fields[0] != "25":
                    continue
                line = line.replace(fields[0], "127.0.0.1:%d" % port, 1)
            out.append(line)
    return "".join(out)


class Postino:
    name = "postino"

    def __init__(self, root, bindir, sink_port, defaults=False):
        self.dir = os.path.join(root, "postino")
        self.conf = os.path.join(self.dir, "conf")
        os.makedirs(self.conf)
        self.bindir = bindir
        self.port = free_port()
        self.log = os.path.join(self.dir, "maillog")
        self.started = False
        tuned = "" if defaults else """# generous limits: the benchmark measures throughput, not policy
message_size_limit = 104857600
smtpd_client_connection_limit = 10000
smtpd_recipient_limit = 10000
qmgr_message_active_limit = 100000
qmgr_message_recipient_limit = 100000
default_destination_concurrency_limit = 20
default_process_concurrency = 100
smtp_connection_reuse_count_limit = 0
"""
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("""# written by bench.py
queue_directory = %(dir)s/spool
maillog_file = %(log)s
myhostname = postino-bench.localdomain
mydestination =
relayhost = [127.0.0.1]:%(sink)d
mynetworks = 127.0.0.0/8
%(tuned)s""" % {"dir": self.dir, "log": self.log, "sink": sink_port, "tuned": tuned})
        # the shipped classifier rules, where bounce_classifier_rules
        # expects them (next to main.cf); master refuses to start without
        for name in ("bounce_classifier_rules", "shaping_rules"):
            shutil.copyfile(os.path.join(REPO, "conf", name), os.path.join(self.conf, name))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(dist_master_cf(self.port) if defaults else """# written by bench.py
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


class Floor:
    """bench/floor_mta: the least an MTA with fsync-before-250 can cost on
    this machine (one thread per client, one write + fsync per message,
    delivery over kept connections, nothing else). Not an MTA: a measuring
    instrument for what the kernel and the load generator leave."""
    name = "floor"
    binary = os.path.join(REPO, "build", "rel", "bench", "floor_mta")

    def __init__(self, root, sink_port):
        self.dir = os.path.join(root, "floor")
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(os.path.join(self.spool, "pid"))
        self.port = free_port()
        self.sink_port = sink_port
        self.log = os.path.join(self.dir, "stderr")
        self.proc = None

    def start(self):
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [self.binary, str(self.port), str(self.sink_port), self.spool,
                 os.path.join(self.spool, "pid", "master.pid"), "20"],
                stdout=subprocess.DEVNULL, stderr=err)
        pidfile = os.path.join(self.spool, "pid", "master.pid")
        deadline = time.monotonic() + 10
        while not os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not wait_port(self.port, 10) or not os.path.exists(pidfile):
            raise BenchError("floor_mta is not listening on port %d" % self.port)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


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
    cmd = [SMTP_SOURCE] + (["-d"] if args.reuse else []) + [
           "-s", str(args.sessions), "-m", str(args.messages), "-r", str(args.rcpts),
           "-l", str(args.size), "-f", SENDER, "-t", RECIPIENT,
           "-M", "bench.example.com", "127.0.0.1:%d" % mta.port]
    pid = master_pid(mta)
    cpu0 = mta_cpu(pid)
    busy0, all0 = machine_ticks()
    load0 = children_cpu()
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
    mta.cpu = cpu_delta(cpu0, mta_cpu(pid))
    busy1, all1 = machine_ticks()
    # The whole machine during the run, and the load generator's share of
    # it: what is left for an MTA on these CPUs whatever it does.
    mta.machine = ((busy1 - busy0) / TICK, (busy1 - busy0) / max(all1 - all0, 1),
                   children_cpu() - load0)
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
        cpu = getattr(mta, "cpu", {})
        per = 1e6 / TICK / args.messages
        user = sum(u for u, _ in cpu.values()) * per
        system = sum(s for _, s in cpu.values()) * per
        print("%s: CPU per message %.0f us (user %.0f, system %.0f): %s" % (
            mta.name, user + system, user, system,
            ", ".join("%s %.0f+%.0f" % (k, u * per, s * per)
                      for k, (u, s) in sorted(cpu.items(), key=lambda kv: -sum(kv[1])))),
              flush=True)
        busy, util, load = mta.machine
        busy_us, load_us = busy * 1e6 / args.messages, load * 1e6 / args.messages
        print("%s: machine %.0f%% busy; CPU per message of everything %.0f us: the MTA %.0f, "
              "smtp-source and smtp-sink %.0f, the kernel's threads and the rest %.0f"
              % (mta.name, util * 100, busy_us, user + system, load_us,
                 busy_us - user - system - load_us), flush=True)
        return t_accept, t_e2e, (user, system), (busy_us, load_us)
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
        for i, (ta, te, _, _) in enumerate(rounds, 1):
            print("%-8s %5d %12.2f %14.0f %12.2f %14.0f" % (name, i, ta, n / ta, te, n / te))
    med = {name: (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))
           for name, rounds in results.items() if rounds}
    for name, (ta, te) in med.items():
        print("%-8s %5s %12.2f %14.0f %12.2f %14.0f" % (name, "med", ta, n / ta, te, n / te))
    for name, rounds in results.items():
        if rounds:
            print("%-8s CPU per message, all its processes, medians: user %.0f us, "
                  "system %.0f us" % (name, statistics.median(r[2][0] for r in rounds),
                                      statistics.median(r[2][1] for r in rounds)))
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
    ap.add_argument("--defaults", action="store_true",
                    help="postino with the shipped conf/dist settings (not tuned)")
    ap.add_argument("--no-reuse", dest="reuse", action="store_false",
                    help="one message per client connection (smtp-source without -d)")
    ap.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    ap.add_argument("--modes", nargs="?", const=DEFAULT_MODES,
                    help="the mode table at shipped defaults (all, or comma-separated names of %s; "
                         "without a value: %s)" % (", ".join(MODES), DEFAULT_MODES))
    ap.add_argument("--scale", type=float, default=1.0,
                    help="with --modes: multiply each mode's message count")
    ap.add_argument("--fs", choices=["tmp", "ext4"], default="tmp",
                    help="where each run's spool lives: the temp directory's file system "
                         "(default), or a fresh loop-mounted ext4 with a journal per run "
                         "(needs root; fairer A/B: no run inherits another's deleted files)")
    ap.add_argument("--fs-size", type=int, default=3072, help="--fs ext4 image size, MB")
    ap.add_argument("--floor", action="store_true",
                    help="also measure bench/floor_mta (make build/rel/bench/floor_mta): "
                         "the least any MTA with fsync-before-250 costs on this machine")
    ap.add_argument("--bin-b", help="a second postino build, measured in the same rounds "
                                    "(A/B of two builds)")
    return ap.parse_args()


# The issue #12 mode table (make bench-modes): both MTAs at their shipped
# defaults. name: (client reuses its connections (-d), bytes, recipients,
# messages). The 50-recipient modes count recipient deliveries.
MODES = {
    "reuse-4k": (True, 4096, 1, 20000),
    "noreuse-4k": (False, 4096, 1, 10000),
    "reuse-100k": (True, 102400, 1, 4000),
    "noreuse-100k": (False, 102400, 1, 4000),
    "reuse-4k-50rcpt": (True, 4096, 50, 1000),
    "noreuse-4k-50rcpt": (False, 4096, 50, 1000),
}
DEFAULT_MODES = "reuse-4k,noreuse-4k,reuse-100k,reuse-4k-50rcpt"


def mtas(args):
    """(name, factory) of each MTA measured, in the order of a round."""
    out = [("postino", lambda r, sp: Postino(r, args.bin, sp, args.defaults))]
    if args.bin_b:
        def make_b(r, sp):
            m = Postino(r, args.bin_b, sp, args.defaults)
            m.name = "postino-b"
            return m
        out.append(("postino-b", make_b))
    out.append(("postfix", Postfix))
    if args.floor:
        out.append(("floor", Floor))
    only = {None: None, "postino": ("postino", "postino-b", "floor"),
            "postfix": ("postfix", "floor")}[args.only]
    return [(n, m) for n, m in out if only is None or n in only]


def run_rounds(args, root, tag):
    """args.rounds rounds, the MTAs in turns; name -> [(accept s, e2e s)].
    The order rotates from round to round: on this machine the MTA that
    runs first in a round was measured 20-30% slower than the same build
    run second (the spool's file system still busy with the previous
    run's deleted files), so a fixed order decided an A/B by itself.
    Give a multiple of the number of MTAs as --rounds for a fair share."""
    results = {}
    for i in range(args.rounds):
        order = mtas(args)
        k = i % len(order)
        for name, make in order[k:] + order[:k]:
            # The last round's spool is still being written back:
            # flush it first, so no round pays for another's I/O.
            os.sync()
            time.sleep(2)
            rdir = os.path.join(root, "%s%s-%d" % (tag, name, i + 1))
            os.mkdir(rdir)
            image = mount_fresh_fs(rdir, args) if args.fs == "ext4" else None
            os.chmod(rdir, 0o755)
            try:
                results.setdefault(name, []).append(bench_one(make, rdir, args))
            finally:
                if image:
                    unmount_fs(rdir, image)
    return results


def mount_fresh_fs(rdir, args):
    """--fs ext4: the run's directory on a new ext4 file system with a
    journal (Debian's default), loop-mounted from a sparse image. Every run
    starts on the same empty file system: nothing of another run's files
    (or of this machine's own file system: here ext4 without a journal,
    whose inode allocator steps over every inode deleted in the last
    minute) is measured with it."""
    image = rdir + ".img"
    with open(image, "wb") as f:
        f.truncate(args.fs_size << 20)
    run(["mkfs.ext4", "-q", "-F", image], timeout=120)
    run(["mount", "-o", "loop", image, rdir], timeout=60)
    return image


def unmount_fs(rdir, image):
    for _ in range(20):
        if run(["umount", rdir], timeout=60, check=False).returncode == 0:
            break
        time.sleep(0.5)   # a daemon still exiting holds it
    try:
        os.unlink(image)
    except OSError:
        pass


def report_modes(args, table):
    """table: mode -> results of run_rounds. One line per mode: the median
    end-to-end rate of each MTA (recipient deliveries/s) and the ratio."""
    print()
    print("machine: %s" % machine())
    print("modes at the shipped defaults of both MTAs, %d round(s) each, medians" % args.rounds)
    names = [n for n, _ in mtas(args)]
    print("accepted and end-to-end: messages/s (recipient deliveries/s with 50 rcpts); "
          "ratio: postino/postfix end to end;\nceiling: the ratio an MTA using no CPU at "
          "all would reach here, the CPUs / smtp-source's and smtp-sink's CPU per message" +
          ("; floor: floor_mta's end-to-end rate / Postfix's" if args.floor else ""))
    print("%-18s %4s %6s %5s %6s  " % ("mode", "-d", "size", "rcpts", "msgs") +
          " ".join("%11s" % ("acc " + n) for n in names) + " " +
          " ".join("%11s" % ("e2e " + n) for n in names) + "  ratio ceiling" +
          ("  floor" if args.floor else ""))
    for mode, (msgs, results) in table.items():
        reuse, size, rcpts, _ = MODES[mode]
        acc, e2e = {}, {}
        for n in names:
            if results.get(n):
                acc[n] = msgs * rcpts / statistics.median(r[0] for r in results[n])
                e2e[n] = msgs * rcpts / statistics.median(r[1] for r in results[n])
        ratio = ("%.2f" % (e2e["postino"] / e2e["postfix"])
                 if "postino" in e2e and "postfix" in e2e else "-")
        # The load generator's CPU per message in postino's runs bounds any
        # MTA on this machine: even one costing nothing could not pass
        # ncpu / (that CPU). As a ratio to Postfix: the best this machine
        # can show.
        ceiling = "-"
        if results.get("postino") and "postfix" in e2e:
            load_us = statistics.median(r[3][1] for r in results["postino"])
            ceiling = "%.1f" % (os.cpu_count() * 1e6 / max(load_us, 1) * rcpts / e2e["postfix"])
        floor = ("%.2f" % (e2e["floor"] / e2e["postfix"])
                 if "floor" in e2e and "postfix" in e2e else "-")
        print("%-18s %4s %5dk %5d %6d  " % (mode, "on" if reuse else "off", size // 1024,
                                             rcpts, msgs) +
              " ".join("%11.0f" % acc.get(n, 0) for n in names) + " " +
              " ".join("%11.0f" % e2e.get(n, 0) for n in names) +
              "  %5s %7s" % (ratio, ceiling) + ("  %5s" % floor if args.floor else ""))


def main_modes(args, root):
    table = {}
    args.defaults = True
    for mode in (MODES if args.modes == "all" else args.modes.split(",")):
        if mode not in MODES:
            raise BenchError("unknown mode %s (known: %s)" % (mode, ", ".join(MODES)))
        args.reuse, args.size, args.rcpts, args.messages = MODES[mode]
        if args.scale != 1.0:
            args.messages = max(100, int(args.messages * args.scale))
        print("== mode %s" % mode, flush=True)
        table[mode] = (args.messages, run_rounds(args, root, mode + "-"))
    return table


def main():
    args = parse_args()
    args.bin = os.path.abspath(args.bin)
    if args.bin_b:
        args.bin_b = os.path.abspath(args.bin_b)
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
        if args.modes:
            results = main_modes(args, root)
        else:
            results = run_rounds(args, root, "")
        ok = True
    except (BenchError, subprocess.TimeoutExpired) as e:
        sys.stderr.write("bench: FAILED: %s\n" % e)
    finally:
        if args.keep or not ok:
            print("bench: files kept in %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if results and args.modes:
        report_modes(args, results)
    elif results:
        report(args, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
