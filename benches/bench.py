#!/usr/bin/env python3
"""PgGate benchmark driver (Python 3, standard library only).

Normally started by `benches/run`, which installs the tools, raises the
open-files limit, builds PgGate and its helpers (idle-clients, bench-relay), makes the work
directory and cleans up after us whatever happens. It can also be run on its
own (see --help); it then makes and removes its own work directory.

What it does, in one run:
  * a primary and one streaming replica (initdb + pg_basebackup -R) under the
    work directory, on free 127.0.0.1 ports, as the `postgres` OS user when
    run as root; `pgbench -i -s 10` on the primary; waits for the replica;
  * PgGate processes (pool.size 4 and 8, routing.reads "primary" and
    "replicas") and PgBouncer processes (transaction mode with the same pool
    sizes; session mode for -M prepared), and the bare relay (benches/relay,
    one server connection per client, bytes forwarded unread), all running
    side by side;
  * interleaved rounds of pgbench runs against direct / PgBouncer / PgGate,
    with the proxy's CPU time (from /proc/PID/stat) and p99 latency (from
    pgbench -l logs); TPC-B-like writes, connection churn (-C), a large COPY
    out, 10,000 idle clients (RSS per client, time to connect them all), and
    syscalls per transaction (strace -c -f -p);
  * prints one markdown table on stdout (progress goes to stderr).

Only 127.0.0.1 is ever connected to.
"""

import argparse
import json
import math
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
DB = "postgres"
USER = "postgres"
SCALE = 10
COPY_ROWS = 200_000
COPY_ROW_BYTES = 1000 + 1  # repeat('x', 1000) and a newline, in COPY text format
COPY_SQL = f"COPY (SELECT repeat('x', 1000) FROM generate_series(1, {COPY_ROWS})) TO STDOUT"
IDLE_CLIENTS = 10_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
START = time.monotonic()

# Targets (columns of the table).
DIRECT, BOUNCER, GATE_P, GATE_R = "direct", "pgbouncer", "gate_primary", "gate_replicas"
TARGETS = [DIRECT, BOUNCER, GATE_P, GATE_R]
# The do-nothing relay (benches/relay): measured on the -S simple rows only.
RELAY = "relay"
# pgbench connected to the replica itself: the c=1 latency baseline for the
# queries PgGate sends there.
DIRECT_R = "direct_replica"
LABEL = {
    DIRECT: "direct",
    BOUNCER: "PgBouncer",
    GATE_P: "PgGate reads→primary",
    GATE_R: "PgGate reads→replica",
    RELAY: "bare relay",
    DIRECT_R: "direct to the replica",
}


def log(msg):
    t = time.monotonic() - START
    print(f"[bench {int(t // 60):02d}:{t % 60:04.1f}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class PgbenchCell:
    """One row of pgbench results: a workload at a client count and pool size."""

    script: str  # "select" (-S) or "tpcb" (the built-in TPC-B-like script)
    mode: str  # simple | extended | prepared
    clients: int
    pool: int
    churn: bool = False  # -C: a new connection for every transaction

    def name(self):
        s = "-S" if self.script == "select" else "TPC-B"
        s += f" {self.mode} c={self.clients}"
        if self.churn:
            s += " -C (new connection per tx)"
        return s


def is_latency_cell(cell):
    """The -S c=1 rows: the added-latency target is read from them."""
    return cell.script == "select" and cell.clients == 1 and not cell.churn


def profile(quick):
    if quick:
        select_cells = [
            PgbenchCell("select", "simple", 1, 8),
            PgbenchCell("select", "simple", 16, 8),
            PgbenchCell("select", "simple", 256, 8),
            PgbenchCell("select", "extended", 16, 8),
            PgbenchCell("select", "prepared", 16, 8),
        ]
        other_cells = [
            PgbenchCell("tpcb", "simple", 16, 8),
            PgbenchCell("select", "simple", 16, 8, churn=True),
        ]
        return dict(rounds=1, duration=3, syscall_duration=2, select_cells=select_cells,
                    other_cells=other_cells, latency_repeats=1, latency_duration=3)
    select_cells = []
    for mode in ("simple", "extended", "prepared"):
        # At c = 1 only one pooled connection is ever used: one row (pool 8).
        select_cells.append(PgbenchCell("select", mode, 1, 8))
        for clients in (16, 64, 256):
            for pool in (4, 8):
                select_cells.append(PgbenchCell("select", mode, clients, pool))
    other_cells = [
        PgbenchCell("tpcb", "simple", 16, 8),
        PgbenchCell("tpcb", "simple", 64, 8),
        PgbenchCell("select", "simple", 16, 8, churn=True),
    ]
    # The c=1 rows decide the added-latency target, a difference of a few tens
    # of microseconds between two runs: they run in more, shorter passes, each
    # pass running every target once, back to back (see paired_added).
    return dict(rounds=3, duration=5, syscall_duration=5, select_cells=select_cells,
                other_cells=other_cells, latency_repeats=5, latency_duration=3)


# --------------------------------------------------------------------------
# Processes


def running_as_root():
    return os.geteuid() == 0


def server_user_kwargs():
    """Popen arguments that run a child as the postgres OS user when we are root."""
    if not running_as_root():
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise BenchError("running as root needs the `postgres` OS user (apt-get install postgresql)")
    env = dict(os.environ, HOME=pw.pw_dir or "/tmp", USER="postgres", LOGNAME="postgres")
    return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], env=env)


def chown_to_server_user(path):
    if running_as_root():
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def run(argv, *, timeout=300, check=True, as_server=False, cwd=None, env=None, stdout=None):
    kwargs = server_user_kwargs() if as_server else {}
    if env is not None:
        kwargs["env"] = dict(kwargs.get("env", os.environ), **env)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                           stdout=stdout if stdout is not None else subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout, cwd=cwd, **kwargs)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout} s: {' '.join(map(str, argv))}")
    if check and p.returncode != 0:
        raise BenchError(f"failed ({p.returncode}): {' '.join(map(str, argv))}\n"
                         f"{(p.stdout or '')[-2000:]}{p.stderr[-2000:]}")
    return p


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class Procs:
    """Long-running children: each is recorded in pids/ so that benches/run
    can kill it by pid if this driver dies without cleaning up."""

    def __init__(self, pid_dir):
        self.pid_dir = pid_dir
        self.live = {}

    def start(self, name, argv, log_path, *, as_server=False, stdin=subprocess.DEVNULL,
              stdout=None):
        kwargs = server_user_kwargs() if as_server else {}
        logf = open(log_path, "ab")
        p = subprocess.Popen(argv, stdin=stdin, stdout=stdout if stdout is not None else logf,
                             stderr=logf, start_new_session=True, **kwargs)
        logf.close()
        with open(os.path.join(self.pid_dir, str(p.pid)), "w") as f:
            f.write(name + "\n")
        self.live[p.pid] = (name, p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        if p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            except ProcessLookupError:
                pass
        self.live.pop(p.pid, None)
        try:
            os.unlink(os.path.join(self.pid_dir, str(p.pid)))
        except FileNotFoundError:
            pass

    def stop_all(self, sig=signal.SIGTERM):
        for _, p in list(self.live.values())[::-1]:
            self.stop(p, sig)


# --------------------------------------------------------------------------
# Tools


@dataclass
class Tools:
    pg_bin: str
    pgbouncer: str
    strace: str
    pggate: str
    idle_clients: str
    relay: str

    def pg(self, name):
        return os.path.join(self.pg_bin, name)


def find_tools(args):
    initdb = shutil.which("initdb")
    if initdb:
        pg_bin = os.path.dirname(os.path.realpath(initdb))
    else:
        dirs = sorted((d for d in os.listdir("/usr/lib/postgresql")
                       if os.path.isfile(f"/usr/lib/postgresql/{d}/bin/initdb")),
                      key=lambda d: int(d) if d.isdigit() else 0) \
            if os.path.isdir("/usr/lib/postgresql") else []
        if not dirs:
            raise BenchError("PostgreSQL server binaries not found: apt-get install postgresql "
                             "postgresql-contrib (benches/run does it)")
        pg_bin = f"/usr/lib/postgresql/{dirs[-1]}/bin"
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "psql", "pgbench", "postgres"):
        if not os.path.isfile(os.path.join(pg_bin, tool)):
            raise BenchError(f"{tool} missing from {pg_bin}")
    bouncer = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer"
                                            if os.path.isfile("/usr/sbin/pgbouncer") else None)
    if not bouncer:
        raise BenchError("pgbouncer not found: apt-get install pgbouncer (benches/run does it)")
    strace = shutil.which("strace") or ""
    for path, what in ((args.pggate, "--pggate"), (args.idle_clients, "--idle-clients"),
                       (args.relay, "--relay")):
        if not os.access(path, os.X_OK):
            raise BenchError(f"{what} {path} is not an executable (build it first)")
    return Tools(pg_bin, bouncer, strace, os.path.abspath(args.pggate),
                 os.path.abspath(args.idle_clients), os.path.abspath(args.relay))


# --------------------------------------------------------------------------
# The cluster


SERVER_CONF = """
# ---- pggate benchmark ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '{dir}'
max_connections = 1000
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 5
wal_keep_size = 2GB
max_wal_size = 4GB
checkpoint_timeout = 30min
hot_standby = on
autovacuum = off
jit = off
logging_collector = off
log_line_prefix = '%m [%p] '
"""

HBA = """\
local   all          all                 trust
host    replication  all    127.0.0.1/32 trust
host    all          all    127.0.0.1/32 trust
"""


class Cluster:
    def __init__(self, tools, work, procs):
        self.tools, self.work, self.procs = tools, work, procs
        self.primary_port = self.replica_port = None
        self.started = []

    def psql(self, port, sql, timeout=120):
        p = run([self.tools.pg("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                 "-h", HOST, "-p", str(port), "-U", USER, "-d", DB, "-c", sql], timeout=timeout)
        return p.stdout.strip()

    def _start(self, name):
        data = os.path.join(self.work, name)
        for attempt in range(3):
            port = free_port()
            with open(os.path.join(data, "postgresql.conf"), "a") as f:
                f.write(f"port = {port}\n")
            p = run([self.tools.pg("pg_ctl"), "-D", data, "-l",
                     os.path.join(self.work, f"{name}.log"), "-w", "-t", "120", "start"],
                    as_server=True, cwd=self.work, check=False, timeout=180)
            if (os.path.exists(os.path.join(data, "postmaster.pid")) or p.returncode == 0) \
                    and data not in self.started:
                self.started.append(data)
            if p.returncode == 0:
                return port
            with open(os.path.join(self.work, f"{name}.log")) as f:
                text = f.read()
            if attempt < 2 and "could not bind" in text:
                continue
            raise BenchError(f"pg_ctl start {name} failed:\n{p.stdout}{p.stderr}\n{text[-3000:]}")
        raise AssertionError("unreachable")

    def build(self):
        t = self.tools
        primary = os.path.join(self.work, "primary")
        log("initdb (primary)")
        run([t.pg("initdb"), "-D", primary, "-A", "trust", "-U", USER, "--no-sync", "-E",
             "UTF8", "--locale=C"], as_server=True, cwd=self.work)
        with open(os.path.join(primary, "postgresql.conf"), "a") as f:
            f.write(SERVER_CONF.format(dir=self.work))
        with open(os.path.join(primary, "pg_hba.conf"), "w") as f:
            f.write(HBA)
        self.primary_port = self._start("primary")
        log(f"primary on {HOST}:{self.primary_port}; pg_basebackup (replica)")
        run([t.pg("pg_basebackup"), "-h", HOST, "-p", str(self.primary_port), "-U", USER,
             "-D", os.path.join(self.work, "replica"), "-R", "-X", "stream", "--no-sync",
             "--checkpoint=fast"], as_server=True, cwd=self.work)
        self.replica_port = self._start("replica")
        log(f"replica on {HOST}:{self.replica_port}; pgbench -i -s {SCALE} on the primary")
        self.wait_streaming()
        run([t.pg("pgbench"), "-i", "-s", str(SCALE), "-q", "-h", HOST, "-p",
             str(self.primary_port), "-U", USER, DB], timeout=600)
        self.psql(self.primary_port, "CHECKPOINT")
        self.wait_caught_up()
        if self.psql(self.replica_port, "SELECT pg_is_in_recovery()") != "t":
            raise BenchError("the replica is not in recovery")
        n = self.psql(self.replica_port, "SELECT count(*) FROM pgbench_branches")
        if n != str(SCALE):
            raise BenchError(f"the replica has {n} branches, expected {SCALE}")

    def wait_streaming(self):
        deadline = time.monotonic() + 60
        while True:
            n = self.psql(self.primary_port,
                          "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            if n == "1":
                return
            if time.monotonic() > deadline:
                raise BenchError("the replica is not streaming after 60 s")
            time.sleep(0.1)

    def wait_caught_up(self, timeout=300):
        lsn = self.psql(self.primary_port, "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while True:
            ok = self.psql(self.replica_port,
                           f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")
            if ok == "t":
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the replica has not replayed up to {lsn} after {timeout} s")
            time.sleep(0.2)

    def stop(self, mode="fast"):
        for data in self.started[::-1]:
            if os.path.exists(os.path.join(data, "postmaster.pid")):
                run([self.tools.pg("pg_ctl"), "-D", data, "stop", "-m", mode, "-w", "-t", "60"],
                    as_server=True, cwd=self.work, check=False, timeout=90)
        self.started = []


# --------------------------------------------------------------------------
# Proxies


@dataclass
class Proxy:
    kind: str  # "gate", "bouncer" or "relay"
    name: str
    port: int
    proc: subprocess.Popen
    log_path: str
    workers: int = 0

    @property
    def pid(self):
        return self.proc.pid


def wait_ready(tools, proxy, timeout=60):
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proxy.proc.poll() is not None:
            break
        if port_open(proxy.port):
            p = run([tools.pg("psql"), "-X", "-A", "-t", "-q", "-h", HOST, "-p", str(proxy.port),
                     "-U", USER, "-d", DB, "-c", "SELECT 1"], check=False, timeout=30)
            if p.returncode == 0 and p.stdout.strip() == "1":
                return
            last = p.stderr.strip()
        time.sleep(0.2)
    with open(proxy.log_path, errors="replace") as f:
        text = f.read()[-3000:]
    raise BenchError(f"{proxy.name} did not become ready on {HOST}:{proxy.port} ({last})\n"
                     f"--- {proxy.log_path} ---\n{text}")


def start_gate(tools, work, procs, cluster, name, *, reads, pool, max_clients=None):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    cfg = f"""# written by benches/bench.py
[proxy]
listen = "{HOST}:{port}"
{f'max_clients = {max_clients}' if max_clients else ''}

[metrics]
listen = ""

[pool]
size = {pool}

[routing]
reads = "{reads}"

[[backends]]
name = "primary"
host = "{HOST}"
port = {cluster.primary_port}
role = "primary"

[[backends]]
name = "replica"
host = "{HOST}"
port = {cluster.replica_port}
role = "replica"
"""
    path = os.path.join(d, "pggate.toml")
    with open(path, "w") as f:
        f.write(cfg)
    run([tools.pggate, "--check", "--config", path], timeout=30)
    log_path = os.path.join(d, "pggate.log")
    proc = procs.start(name, [tools.pggate, "--config", path], log_path)
    proxy = Proxy("gate", name, port, proc, log_path)
    wait_ready(tools, proxy)
    with open(log_path, errors="replace") as f:
        m = re.search(r"with (\d+) workers", f.read())
    proxy.workers = int(m.group(1)) if m else 0
    return proxy


def start_bouncer(tools, work, procs, cluster, name, *, pool_mode, pool):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    port = free_port()
    userlist = os.path.join(d, "userlist.txt")
    with open(userlist, "w") as f:
        f.write(f'"{USER}" ""\n')
    ini = f"""; written by benches/bench.py
[databases]
{DB} = host={HOST} port={cluster.primary_port} dbname={DB}

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
pool_mode = {pool_mode}
default_pool_size = {pool}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 12000
max_db_connections = 0
admin_users = {USER}
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 60
"""
    path = os.path.join(d, "pgbouncer.ini")
    with open(path, "w") as f:
        f.write(ini)
    log_path = os.path.join(d, "pgbouncer.log")
    # Foreground (no -d); PgBouncer refuses to run as root.
    proc = procs.start(name, [tools.pgbouncer, path], log_path, as_server=True)
    proxy = Proxy("bouncer", name, port, proc, log_path)
    wait_ready(tools, proxy)
    return proxy


def start_relay(tools, work, procs, cluster, name):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    log_path = os.path.join(d, "relay.log")
    proc = procs.start(name, [tools.relay, f"{HOST}:{port}", f"{HOST}:{cluster.primary_port}"],
                       log_path)
    proxy = Proxy("relay", name, port, proc, log_path)
    wait_ready(tools, proxy)
    return proxy


# --------------------------------------------------------------------------
# Measurements


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[k]


def pgbench_start(tools, work, port, pid, cell, duration, tag, transactions=None):
    """Starts one pgbench run in the background (for `duration` seconds, or
    `transactions` per client); pgbench_finish() collects it."""
    logdir = os.path.join(work, "pgbench-logs", tag)
    os.makedirs(logdir, exist_ok=True)
    jobs = 1 if cell.clients == 1 else 2
    argv = [tools.pg("pgbench"), "-h", HOST, "-p", str(port), "-U", USER, "-n",
            *(["-t", str(transactions)] if transactions else ["-T", str(duration)]),
            "-c", str(cell.clients), "-j", str(jobs), "-M", cell.mode,
            "-l", f"--log-prefix={os.path.join(logdir, 'tx')}"]
    if cell.script == "select":
        argv.append("-S")
    if cell.churn:
        argv.append("-C")
    argv.append(DB)
    cpu0 = cpu_seconds(pid) if pid else None
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=logdir)
    return dict(proc=proc, logdir=logdir, pid=pid, cpu0=cpu0, t0=t0, duration=duration)


def pgbench_finish(run_):
    """Waits for a run from pgbench_start() and returns its results."""
    proc = run_["proc"]
    try:
        out, err = proc.communicate(timeout=(run_["duration"] or 30) + 90)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        err = "pgbench did not finish in time and was killed"
        rc = -1
    except BaseException:
        proc.kill()  # interrupted: leave no pgbench behind
        proc.wait()
        raise
    wall = time.monotonic() - run_["t0"]
    pid = run_["pid"]
    cpu = cpu_seconds(pid) - run_["cpu0"] if pid else None

    def grab(pattern, conv=float, default=None):
        m = re.search(pattern, out or "")
        return conv(m.group(1)) if m else default

    tx = grab(r"number of transactions actually processed: (\d+)", int, 0)
    failed = grab(r"number of failed transactions: (\d+)", int, 0)
    tps = grab(r"tps = ([0-9.]+)", float, 0.0)
    aborted = len(re.findall(r"client \d+ aborted", err))
    errors = failed + aborted
    if rc != 0 and errors == 0:
        errors = 1
    first_error = ""
    if errors:
        lines = [l for l in err.splitlines() if "error" in l.lower() or "abort" in l.lower()]
        first_error = (lines[0] if lines else err.strip()[:300])[:300]

    # -l lines: client_id transaction_no latency_us script_no epoch_s epoch_us
    # (the last two: when the transaction completed).
    lat = []
    logdir = run_["logdir"]
    for fn in os.listdir(logdir):
        with open(os.path.join(logdir, fn)) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]))
    shutil.rmtree(logdir, ignore_errors=True)
    lat.sort()
    return dict(
        tps=tps, tx=tx, errors=errors, first_error=first_error, wall=wall, cpu=cpu,
        cpu_per_10k=(cpu / tx * 10_000) if (cpu is not None and tx) else None,
        p99_ms=percentile(lat, 0.99) / 1000 if lat else None,
        mean_us=(sum(lat) / len(lat)) if lat else None,
    )


def pgbench_run(tools, work, port, pid, cell, duration, tag, transactions=None):
    """One pgbench run; returns a dict of results."""
    return pgbench_finish(pgbench_start(tools, work, port, pid, cell, duration, tag,
                                        transactions))


def copy_run(tools, port, pid):
    argv = [tools.pg("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port),
            "-U", USER, "-d", DB, "-c", COPY_SQL]
    cpu0 = cpu_seconds(pid) if pid else None
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull:
        p = run(argv, check=False, timeout=600, stdout=devnull)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0 if pid else None
    nbytes = COPY_ROWS * COPY_ROW_BYTES
    err = 0 if p.returncode == 0 else 1
    return dict(mbps=nbytes / 1e6 / wall if not err else 0.0, wall=wall, errors=err,
                first_error=p.stderr.strip()[:300],
                cpu_per_gb=(cpu / (nbytes / 1e9)) if cpu is not None else None)


def idle_run(tools, proxy, count, threads, inflight):
    """Opens `count` idle clients through the proxy and measures its RSS."""
    time.sleep(1.0)
    before = rss_kib(proxy.pid)
    helper = subprocess.Popen(
        [tools.idle_clients, "--port", str(proxy.port), "--count", str(count),
         "--threads", str(threads), "--inflight", str(inflight), "--timeout-secs", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([helper.stdout], [], [], 300)
        if not ready:
            raise BenchError(f"idle-clients gave no result within 300 s ({proxy.name})")
        line = helper.stdout.readline()
        if not line:
            raise BenchError(f"idle-clients failed: {helper.stderr.read()[-2000:]}")
        res = json.loads(line)
        time.sleep(1.0)
        after = rss_kib(proxy.pid)
    finally:
        try:
            helper.stdin.close()
        except OSError:
            pass
        try:
            helper.wait(60)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
    connected = res["connected"]
    return dict(
        connected=connected, failed=res["failed"], seconds=res["seconds"],
        first_error=res["first_error"], rss_before=before, rss_after=after,
        kib_per_client=(after - before) / connected if connected else None,
        errors=res["failed"],
    )


def strace_during(tools, work, proxy, name, action):
    """Counts the proxy's syscalls (strace -c -f -p: all its threads) while
    `action()` runs; returns ({syscall: calls}, total, seconds, action's result)."""
    out = os.path.join(work, f"strace-{proxy.name}-{name}.txt")
    st = subprocess.Popen([tools.strace, "-c", "-f", "-p", str(proxy.pid), "-o", out],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # "strace: Process N attached [with K threads]" once every thread is traced.
        deadline = time.monotonic() + 10
        attached = False
        while time.monotonic() < deadline and not attached:
            ready, _, _ = select.select([st.stderr], [], [], 0.5)
            if ready:
                line = st.stderr.readline()
                if not line:
                    break
                attached = "attached" in line
        if not attached:
            raise BenchError(f"strace could not attach to {proxy.name} (pid {proxy.pid})")
        t0 = time.monotonic()
        result = action()
        seconds = time.monotonic() - t0
    finally:
        if st.poll() is None:
            st.send_signal(signal.SIGINT)
        try:
            st.wait(30)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    calls, total = {}, None
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or not re.match(r"^[0-9.]+$", parts[0]):
                continue
            n = int(parts[3])
            if parts[-1] == "total":
                total = n
            else:
                calls[parts[-1]] = n
    os.unlink(out)
    if total is None:
        raise BenchError(f"no strace summary for {proxy.name}")
    return calls, total, seconds, result


def syscall_run(tools, work, proxy, duration):
    """Syscalls per transaction of pgbench -S -M simple -c 1 through the proxy.

    strace counts the proxy's syscalls over a whole short run (pgbench -t 1:
    connection setup and one transaction) and over a whole long one
    (pgbench -T duration); the difference, divided by the difference in
    transactions, leaves out pgbench's connection setup. What the proxy does
    on its own (health checks, timers), at the rate strace counts over an idle
    window just before, is taken off for the difference in time."""
    if not tools.strace:
        return dict(error="strace not installed")
    cell = PgbenchCell("select", "simple", 1, 8)
    try:
        idle_calls, idle_total, idle_s, _ = strace_during(
            tools, work, proxy, "idle", lambda: time.sleep(duration))
        short_calls, short_total, short_s, short = strace_during(
            tools, work, proxy, "short",
            lambda: pgbench_run(tools, work, proxy.port, None, cell, None,
                                f"strace-short-{proxy.name}", transactions=1))
        calls, total, long_s, r = strace_during(
            tools, work, proxy, "long",
            lambda: pgbench_run(tools, work, proxy.port, None, cell, duration,
                                f"strace-long-{proxy.name}"))
    except BenchError as e:
        return dict(error=str(e))
    tx = r["tx"] - short["tx"]
    if tx <= 0 or r["errors"] or short["errors"]:
        return dict(error=f"pgbench under strace: {r['first_error'] or short['first_error']}")
    extra_s = long_s - short_s

    def per_tx(long_n, short_n, idle_n):
        return max(0.0, long_n - short_n - idle_n / idle_s * extra_s) / tx

    breakdown = {k: per_tx(v, short_calls.get(k, 0), idle_calls.get(k, 0))
                 for k, v in calls.items()}
    return dict(per_tx=per_tx(total, short_total, idle_total), breakdown=breakdown, tx=tx,
                errors=0, raw_per_tx=total / r["tx"], idle_per_s=idle_total / idle_s)


# --------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args, tools, work, procs):
        self.args, self.tools, self.work, self.procs = args, tools, work, procs
        self.prof = profile(args.quick)
        if args.rounds:
            self.prof["rounds"] = args.rounds
        if args.duration:
            self.prof["duration"] = args.duration
            self.prof["syscall_duration"] = args.duration
            self.prof["latency_duration"] = args.duration
        if args.latency_passes:
            self.prof["latency_repeats"] = args.latency_passes
        self.cluster = Cluster(tools, work, procs)
        self.gates = {}  # (reads, pool) -> Proxy
        self.bouncers = {}  # (pool_mode, pool) -> Proxy
        self.relay = None  # Proxy
        self.done = self.total_runs = 0  # pgbench runs, for the progress log
        self.results = {}  # run key -> [result per round]
        self.extra = {}  # other measurements -> [result per round]
        self.session_pool = 0
        self.versions = {}

    # Which process serves a cell for a target.
    def endpoint(self, cell, target):
        if target == DIRECT:
            return (None, self.cluster.primary_port, None)
        if target == RELAY:
            return (self.relay.name, self.relay.port, self.relay.pid)
        if target == DIRECT_R:
            return ("direct-replica", self.cluster.replica_port, None)
        if target == BOUNCER:
            if cell.mode == "prepared":
                b = self.bouncers[("session", self.session_pool)]
            else:
                b = self.bouncers[("transaction", cell.pool)]
        else:
            reads = "primary" if target == GATE_P else "replicas"
            b = self.gates[(reads, cell.pool)]
        return (b.name, b.port, b.pid)

    def run_key(self, cell, target):
        name, _, _ = self.endpoint(cell, target)
        pool_matters = name is not None and \
            not name.startswith(("bouncer-session", "relay", "direct-replica"))
        return (name or "direct", cell.script, cell.mode, cell.clients,
                cell.pool if pool_matters else None, cell.churn)

    @staticmethod
    def targets_for(cell):
        """The relay has no pool and no protocol: the -S simple rows show the floor.
        At c=1 the replica is measured directly too, as the baseline of the
        latency PgGate adds to the reads it sends there."""
        extra = []
        if is_latency_cell(cell):
            extra.append(DIRECT_R)
        if cell.script == "select" and cell.mode == "simple" and not cell.churn:
            extra.append(RELAY)
        return TARGETS + extra

    def setup(self):
        t = self.tools
        self.versions["postgres"] = run([t.pg("postgres"), "--version"]).stdout.strip()
        self.versions["pgbouncer"] = run([t.pgbouncer, "--version"]).stdout.splitlines()[0]
        self.versions["pggate"] = run([t.pggate, "--version"]).stdout.strip()
        self.cluster.build()
        cells = self.prof["select_cells"] + self.prof["other_cells"]
        pools = sorted({c.pool for c in cells})
        self.session_pool = max(c.clients for c in cells if c.mode == "prepared") \
            if any(c.mode == "prepared" for c in cells) else 0
        for pool in pools:
            for reads in ("primary", "replicas"):
                name = f"gate-{reads}-pool{pool}"
                log(f"starting PgGate {name}")
                self.gates[(reads, pool)] = start_gate(t, self.work, self.procs, self.cluster,
                                                       name, reads=reads, pool=pool)
            name = f"bouncer-transaction-pool{pool}"
            log(f"starting PgBouncer {name}")
            self.bouncers[("transaction", pool)] = start_bouncer(
                t, self.work, self.procs, self.cluster, name, pool_mode="transaction", pool=pool)
        if self.session_pool:
            name = f"bouncer-session-pool{self.session_pool}"
            log(f"starting PgBouncer {name}")
            self.bouncers[("session", self.session_pool)] = start_bouncer(
                t, self.work, self.procs, self.cluster, name, pool_mode="session",
                pool=self.session_pool)
        log("starting the bare relay")
        self.relay = start_relay(t, self.work, self.procs, self.cluster, "relay")
        # Warm-up: open the pools, warm the servers' caches.
        warm = PgbenchCell("select", "simple", 8, 8)
        for port, pid, name in [(self.cluster.primary_port, None, "direct"),
                                (self.cluster.replica_port, None, "replica")] + \
                [(p.port, p.pid, p.name) for p in list(self.gates.values()) +
                 list(self.bouncers.values()) + [self.relay]]:
            r = pgbench_run(t, self.work, port, pid, warm, 1, f"warm-{name}")
            if r["errors"]:
                raise BenchError(f"warm-up through {name} failed: {r['first_error']}")
        log("warm-up done")

    def rounds(self):
        prof = self.prof
        d = prof["duration"]
        groups = {}
        for cell in prof["select_cells"] + prof["other_cells"]:
            g = groups.setdefault((cell.script, cell.mode, cell.clients, cell.churn), [])
            for target in self.targets_for(cell):
                key = self.run_key(cell, target)
                if all(k != key for k, _, _ in g):
                    g.append((key, cell, target))
        group_list = list(groups.values())

        def passes(g):
            """(passes per round, seconds per run) for a group of runs."""
            cell = g[0][1]
            if is_latency_cell(cell):
                return prof["latency_repeats"], prof["latency_duration"]
            return 1, d

        self.total_runs = sum(len(g) * passes(g)[0] for g in group_list) * prof["rounds"]
        self.done = 0
        for rnd in range(prof["rounds"]):
            log(f"round {rnd + 1}/{prof['rounds']}")
            order = group_list if rnd % 2 == 0 else group_list[::-1]
            for gi, g in enumerate(order):
                reps, dur = passes(g)
                for rep in range(reps):
                    k = (rnd * reps + rep + gi) % len(g)
                    self.run_pass(g[k:] + g[:k], dur)
                if g[0][1].script == "tpcb":
                    self.cluster.wait_caught_up()
            self.copy_round(rnd)
            if rnd == 0:
                self.idle_round()
        self.syscalls()

    def run_pass(self, runs, duration):
        """Every run of a group once, back to back: results[key][i] of two
        targets of one group come from the same pass."""
        for key, cell, target in runs:
            _, port, pid = self.endpoint(cell, target)
            tag = "-".join(str(x) for x in key if x is not None)
            r = pgbench_run(self.tools, self.work, port, pid, cell, duration, tag)
            self.results.setdefault(key, []).append(r)
            self.done += 1
            pool = f" pool {cell.pool}" if target not in (DIRECT, DIRECT_R, RELAY) else ""
            err = f", {r['errors']} errors: {r['first_error']}" if r["errors"] else ""
            log(f"  [{self.done}/{self.total_runs}] {cell.name()}{pool} {LABEL[target]}: "
                f"{r['tps']:.0f} tps{err}")

    def copy_round(self, rnd):
        cell = PgbenchCell("select", "simple", 1, 8)
        order = TARGETS[rnd % 4:] + TARGETS[:rnd % 4]
        for target in order:
            _, port, pid = self.endpoint(cell, target)
            r = copy_run(self.tools, port, pid)
            self.extra.setdefault(("copy", target), []).append(r)
            log(f"  COPY out {COPY_ROWS * COPY_ROW_BYTES / 1e6:.0f} MB {LABEL[target]}: "
                f"{r['mbps']:.0f} MB/s{' ERROR ' + r['first_error'] if r['errors'] else ''}")

    def idle_round(self):
        t = self.tools
        for target in (BOUNCER, GATE_R):
            name = "idle-bouncer" if target == BOUNCER else "idle-gate"
            if target == BOUNCER:
                proxy = start_bouncer(t, self.work, self.procs, self.cluster, name,
                                      pool_mode="transaction", pool=8)
            else:
                proxy = start_gate(t, self.work, self.procs, self.cluster, name,
                                   reads="replicas", pool=8, max_clients=IDLE_CLIENTS + 2000)
            try:
                r = idle_run(t, proxy, IDLE_CLIENTS, self.args.idle_threads,
                             self.args.idle_inflight)
            finally:
                self.procs.stop(proxy.proc)
            self.extra.setdefault(("idle", target), []).append(r)
            log(f"  {IDLE_CLIENTS} idle clients via {LABEL[target]}: {r['connected']} connected "
                f"in {r['seconds']:.2f} s, {r['kib_per_client']:.2f} KiB each"
                + (f"; {r['failed']} failed: {r['first_error']}" if r["failed"] else ""))

    def syscalls(self):
        for target in (BOUNCER, GATE_P, GATE_R):
            cell = PgbenchCell("select", "simple", 1, 8)
            name, _, _ = self.endpoint(cell, target)
            proxy = (self.bouncers.get(("transaction", 8)) if target == BOUNCER
                     else self.gates[("primary" if target == GATE_P else "replicas", 8)])
            if proxy is None:
                continue
            r = syscall_run(self.tools, self.work, proxy, self.prof["syscall_duration"])
            self.extra[("syscalls", target)] = [r]
            log(f"  syscalls per -S tx (c=1) {LABEL[target]}: "
                + (f"{r['per_tx']:.2f} ({r['tx']} tx; {r['raw_per_tx']:.2f} before taking off "
                   f"{r['idle_per_s']:.0f}/s seen idle)" if "per_tx" in r else r["error"]))


# --------------------------------------------------------------------------
# The table


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_int(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def spread(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return ""
    m = statistics.median(values)
    if not m:
        return ""
    return f" ±{(max(values) - min(values)) / 2 / m * 100:.0f}%"


def summarize(runs):
    return dict(
        tps=med([r["tps"] for r in runs]),
        tps_spread=spread([r["tps"] for r in runs]),
        p99=med([r["p99_ms"] for r in runs]),
        cpu=med([r["cpu_per_10k"] for r in runs]),
        mean_us=med([r["mean_us"] for r in runs]),
        errors=sum(r["errors"] for r in runs),
        first_error=next((r["first_error"] for r in runs if r["errors"]), ""),
    )


def verdict(ok):
    return "PASS" if ok else "**MISS**"


class Table:
    HEAD = ["test", "pool", "direct", "PgBouncer", "PgGate reads→primary",
            "PgGate reads→replica", "PgGate ÷ direct (pri / rep)",
            "PgGate ÷ PgBouncer (pri / rep)", "CPU ÷ PgBouncer (pri / rep)", "bare relay",
            "PgGate reads→primary ÷ relay (TPS · CPU)"]

    def __init__(self):
        self.rows = []

    def add(self, *cells):
        cells = list(cells) + [""] * (len(self.HEAD) - len(cells))
        self.rows.append([str(c).replace("|", "\\|") for c in cells])

    def render(self):
        lines = ["| " + " | ".join(self.HEAD) + " |",
                 "|" + "|".join(["---"] * len(self.HEAD)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def build_table(bench):
    prof = bench.prof
    table = Table()
    stats = {}

    def cell_stats(cell):
        out = {}
        for target in TARGETS + [RELAY, DIRECT_R]:
            key = bench.run_key(cell, target)
            out[target] = summarize(bench.results[key]) if key in bench.results else None
        stats[cell] = out
        return out

    def pgbench_row(cell):
        s = cell_stats(cell)

        def show(target):
            x = s[target]
            if x is None:
                return "—"
            txt = f"{fmt_int(x['tps'])}{x['tps_spread']} · {fmt_ms(x['p99'])}"
            if target != DIRECT:
                txt += f" · {x['cpu']:.2f}" if x["cpu"] is not None else " · —"
            if x["errors"]:
                txt += f" · **{x['errors']} errors**"
            return txt

        def tps(t):
            return s[t]["tps"] if s[t] else None

        def cpu(t):
            return s[t]["cpu"] if s[t] else None

        bouncer_note = ""
        if cell.mode == "prepared":
            bouncer_note = " (PgBouncer: session mode)"
        table.add(
            cell.name() + bouncer_note, cell.pool, show(DIRECT), show(BOUNCER), show(GATE_P),
            show(GATE_R),
            f"{fmt_ratio(tps(GATE_P), tps(DIRECT))} / {fmt_ratio(tps(GATE_R), tps(DIRECT))}",
            f"{fmt_ratio(tps(GATE_P), tps(BOUNCER))} / {fmt_ratio(tps(GATE_R), tps(BOUNCER))}",
            f"{fmt_ratio(cpu(GATE_P), cpu(BOUNCER))} / {fmt_ratio(cpu(GATE_R), cpu(BOUNCER))}",
            show(RELAY),
            f"{fmt_ratio(tps(GATE_P), tps(RELAY))} · {fmt_ratio(cpu(GATE_P), cpu(RELAY))}"
            if s[RELAY] else "",
        )

    for cell in prof["select_cells"] + prof["other_cells"]:
        pgbench_row(cell)

    # COPY out.
    copy = {t: bench.extra.get(("copy", t), []) for t in TARGETS}
    mbps = {t: med([r["mbps"] for r in copy[t]]) for t in TARGETS}
    cpugb = {t: med([r["cpu_per_gb"] for r in copy[t]]) for t in TARGETS}

    def show_copy(t):
        if not copy[t]:
            return "—"
        txt = f"{fmt_int(mbps[t])}{spread([r['mbps'] for r in copy[t]])}"
        if t != DIRECT:
            txt += f" · {cpugb[t]:.2f}" if cpugb[t] is not None else ""
        errs = sum(r["errors"] for r in copy[t])
        if errs:
            txt += f" · **{errs} errors**"
        return txt

    table.add(f"COPY out {COPY_ROWS * COPY_ROW_BYTES / 1e6:.0f} MB via psql "
              "(MB/s · CPU s per GB)", "8",
              show_copy(DIRECT), show_copy(BOUNCER), show_copy(GATE_P), show_copy(GATE_R),
              f"{fmt_ratio(mbps[GATE_P], mbps[DIRECT])} / {fmt_ratio(mbps[GATE_R], mbps[DIRECT])}",
              f"{fmt_ratio(mbps[GATE_P], mbps[BOUNCER])} / "
              f"{fmt_ratio(mbps[GATE_R], mbps[BOUNCER])}",
              f"{fmt_ratio(cpugb[GATE_P], cpugb[BOUNCER])} / "
              f"{fmt_ratio(cpugb[GATE_R], cpugb[BOUNCER])}")

    # Idle clients.
    idle = {t: bench.extra.get(("idle", t), []) for t in (BOUNCER, GATE_R)}
    idle_kib = {t: med([r["kib_per_client"] for r in idle[t]]) for t in idle}
    idle_s = {t: med([r["seconds"] for r in idle[t]]) for t in idle}
    idle_fail = {t: sum(r["failed"] for r in idle[t]) for t in idle}

    def show_idle(t):
        if not idle[t]:
            return "—"
        txt = (f"{idle_kib[t]:.2f} KiB · {idle_s[t]:.2f} s"
               if idle_kib[t] is not None else "—")
        if idle_fail[t]:
            txt += f" · **{idle_fail[t]} failed**"
        return txt

    table.add(f"{IDLE_CLIENTS:,} idle clients (RSS per client · time to connect all)", "8",
              "—", show_idle(BOUNCER), "", show_idle(GATE_R), "",
              f"— / {fmt_ratio(idle_kib[GATE_R], idle_kib[BOUNCER])} (RSS)")

    # Syscalls.
    sysc = {t: (bench.extra.get(("syscalls", t)) or [None])[0] for t in (BOUNCER, GATE_P, GATE_R)}

    def show_sys(t):
        r = sysc[t]
        if r is None:
            return "—"
        if "per_tx" not in r:
            return f"n/a ({r['error']})"
        top = sorted(r["breakdown"].items(), key=lambda kv: -kv[1])
        top = [f"{k} {v:.2f}" for k, v in top if v >= 0.05][:4]
        return f"{r['per_tx']:.2f} ({', '.join(top)})"

    def sys_value(t):
        r = sysc[t]
        return r["per_tx"] if r and "per_tx" in r else None

    table.add("syscalls per -S simple tx at c=1 (strace -c -f)", "8", "—", show_sys(BOUNCER),
              show_sys(GATE_P), show_sys(GATE_R), "",
              f"{fmt_ratio(sys_value(GATE_P), sys_value(BOUNCER))} / "
              f"{fmt_ratio(sys_value(GATE_R), sys_value(BOUNCER))}")

    # Targets.
    def find(script, mode, clients, pool):
        for cell in stats:
            if (cell.script, cell.mode, cell.clients, cell.pool, cell.churn) == \
                    (script, mode, clients, pool, False):
                return stats[cell]
        return None

    def ratio_target(desc, s, metric, bound, higher_better, pool, extra_ok=None):
        if s is None:
            return
        ref = s[BOUNCER][metric] if s[BOUNCER] else None
        vals = []
        for t in (GATE_P, GATE_R):
            v = s[t][metric] if s[t] else None
            if v is None or not ref:
                vals.append("—")
                continue
            ratio = v / ref
            ok = ratio >= bound if higher_better else ratio <= bound
            if extra_ok is not None:
                ok = ok and extra_ok(s[t])
            note = f", {s[t]['errors']} errors" if s[t]["errors"] else ""
            vals.append(f"{ratio:.2f}×{note} {verdict(ok)}")
        ref_txt = "—" if ref is None else (fmt_int(ref) if metric == "tps" else f"{ref:.2f}")
        relay = s.get(RELAY)
        relay_txt = (f"relay: {relay[metric] / ref:.2f}×"
                     if relay and relay[metric] is not None and ref else "")
        table.add(f"target: {desc}", pool, "", ref_txt, vals[0], vals[1], "", "", "", relay_txt)

    s = find("select", "simple", 16, 8)
    ratio_target("-S simple c=16: TPS ≥ 1.2 × PgBouncer", s, "tps", 1.2, True, 8)
    ratio_target("-S simple c=16: CPU per tx ≤ 0.8 × PgBouncer", s, "cpu", 0.8, False, 8)
    s = find("select", "prepared", 16, 8)
    ratio_target("-M prepared c=16: TPS ≥ 1.2 × PgBouncer (session mode)", s, "tps", 1.2,
                 True, 8)

    def paired_added(cell, target, base):
        """What target's mean latency adds to base's, pass by pass (the two
        ran back to back): (median, lower quartile, upper quartile, passes), µs."""
        a = bench.results.get(bench.run_key(cell, target)) or []
        b = bench.results.get(bench.run_key(cell, base)) or []
        d = sorted(x["mean_us"] - y["mean_us"] for x, y in zip(a, b)
                   if x["mean_us"] is not None and y["mean_us"] is not None)
        if not d:
            return None
        if len(d) == 1:
            return d[0], d[0], d[0], 1
        q1, _, q3 = statistics.quantiles(d, n=4, method="inclusive")
        return statistics.median(d), q1, q3, len(d)

    def show_added(p, bound=None):
        if p is None:
            return "—"
        m, q1, q3, n = p
        txt = f"{m:+.0f} µs"
        if n > 1:
            txt += f" (quartiles {q1:+.0f}…{q3:+.0f}, {n} pairs)"
        if bound is not None:
            txt += f" {verdict(m <= bound)}"
        return txt

    for mode in ("simple", "extended", "prepared"):
        cell = next((c for c in stats if is_latency_cell(c) and c.mode == mode and c.pool == 8),
                    None)
        if cell is None or stats[cell][DIRECT] is None:
            continue
        s = stats[cell]
        base = s[DIRECT]["mean_us"]
        base_r = s[DIRECT_R]["mean_us"] if s.get(DIRECT_R) else None
        # Reads PgGate sends to the replica are compared with the replica.
        vals = [show_added(paired_added(cell, GATE_P, DIRECT), 40),
                show_added(paired_added(cell, GATE_R, DIRECT_R), 40)]
        bouncer_txt = show_added(paired_added(cell, BOUNCER, DIRECT))
        relay_txt = ""
        if s.get(RELAY):
            relay_txt = "relay: " + show_added(paired_added(cell, RELAY, DIRECT))
        base_txt = "—" if not base else (
            f"{base:.0f} µs avg" + (f" (replica: {base_r:.0f} µs)" if base_r else ""))
        table.add(f"target: -S {mode} c=1: added latency per query over direct ≤ 40 µs",
                  8, base_txt, bouncer_txt, vals[0], vals[1], "", "", "", relay_txt)
    vals = []
    for t in (GATE_P, GATE_R):
        v = sys_value(t)
        vals.append("—" if v is None else f"{v:.2f} {verdict(round(v, 1) <= 6.0)}")
    bv = sys_value(BOUNCER)
    table.add("target: syscalls per -S tx at c=1 ≤ 6 (PgBouncer's)", 8, "",
              "—" if bv is None else f"{bv:.2f}", vals[0], vals[1])
    if idle[GATE_R]:
        k, sec = idle_kib[GATE_R], idle_s[GATE_R]
        ok = (k is not None and k <= 2.0 and sec < 3.0 and idle_fail[GATE_R] == 0)
        table.add(f"target: {IDLE_CLIENTS:,} idle clients ≤ 2 KiB each, all connected < 3 s",
                  8, "", show_idle(BOUNCER), "", f"{show_idle(GATE_R)} {verdict(ok)}")
    s = find("select", "simple", 256, 8)
    ratio_target("-S simple c=256 on pool 8: no errors and TPS ≥ 1.2 × PgBouncer", s, "tps",
                 1.2, True, 8, extra_ok=lambda x: x["errors"] == 0)
    return table


def caption(bench):
    prof = bench.prof
    workers = sorted({g.workers for g in bench.gates.values()})
    w = ", ".join(str(x) for x in workers) if workers else "?"
    mode = "quick" if bench.args.quick else "full"
    rounds = f"{prof['rounds']} round" + ("s" if prof["rounds"] != 1 else "")
    latency = ""
    if prof["latency_repeats"] > 1 or prof["latency_duration"] != prof["duration"]:
        latency = (f" (c=1 rows: {prof['latency_repeats']} passes per round, "
                   f"{prof['latency_duration']} s per run)")
    return (f"PgGate benchmark ({mode}): {rounds}, {prof['duration']} s per "
            f"pgbench run{latency}, interleaved; {os.cpu_count()} CPUs. {bench.versions['pggate']} "
            f"(proxy.workers = 0, the default: {w} workers), {bench.versions['pgbouncer']}, "
            f"{bench.versions['postgres']}; pgbench -s {SCALE}.")


LEGEND = """\
Cells: TPS · p99 latency ms (from pgbench -l) · proxy CPU seconds per 10k transactions \
(utime+stime from /proc/PID/stat); medians over the rounds (c=1 rows: over all their passes), \
± is half the range. \
PgGate reads→primary is the like-for-like comparison (one server, as direct and PgBouncer); \
reads→replica sends -S reads to the streaming replica. PgBouncer runs in transaction mode \
with the same pool size, except for -M prepared, where it runs in session mode with one \
server connection per client. c=1 rows use a pool of 8 (only one connection is used); \
the latency PgGate adds at c=1 is over pgbench connected to the server that answered (the \
primary, or the replica for reads→replica): each PgGate run is paired with the direct run \
of the same pass, and the target row gives the median of the per-pair differences of mean \
latency, with their quartiles (PgBouncer and the relay likewise, over the primary). \
The bare relay (benches/relay) is a single-threaded mio loop that gives each client its own \
server connection and forwards bytes without reading them: the floor for any epoll proxy \
on this machine, measured on the -S simple rows. Ratios are of the medians."""


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, fewer cells, short runs")
    ap.add_argument("--pggate", required=True, help="path of the pggate binary")
    ap.add_argument("--idle-clients", required=True, help="path of the idle-clients helper")
    ap.add_argument("--relay", required=True, help="path of the bench-relay helper")
    ap.add_argument("--workdir", help="empty directory to work in (default: a new temp dir)")
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--latency-passes", type=int,
                    help="override the passes per round of the c=1 rows (quick: 1, full: 5)")
    ap.add_argument("--duration", type=int, help="override seconds per pgbench run")
    ap.add_argument("--idle-threads", type=int, default=8,
                    help="idle-clients threads (default 8)")
    ap.add_argument("--idle-inflight", type=int, default=32,
                    help="logins in progress per idle-clients thread (default 32)")
    ap.add_argument("--output", help="also write the table to this file")
    args = ap.parse_args()

    own_workdir = args.workdir is None
    work = args.workdir or tempfile.mkdtemp(prefix="pggate-bench-", dir="/tmp")
    work = os.path.abspath(work)
    os.chmod(work, 0o755)
    chown_to_server_user(work)
    pid_dir = os.path.join(work, "pids")
    os.makedirs(pid_dir, exist_ok=True)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    if soft < want:
        limit = want if running_as_root() else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(hard, limit)))
        except (ValueError, OSError):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            except (ValueError, OSError):
                pass
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < IDLE_CLIENTS + 1000:
        log(f"warning: open files limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} is "
            f"below {IDLE_CLIENTS + 1000}; the idle-clients test may fail")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    procs = Procs(pid_dir)
    bench = None
    status = 0
    try:
        tools = find_tools(args)
        bench = Bench(args, tools, work, procs)
        bench.setup()
        bench.rounds()
        table = build_table(bench)
        text = f"{caption(bench)}\n\n{table.render()}\n\n{LEGEND}\n"
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        log("done")
    except BenchError as e:
        log(f"error: {e}")
        status = 1
    except SystemExit as e:
        log("interrupted; cleaning up")
        status = e.code if isinstance(e.code, int) else 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
        if bench is not None:
            bench.cluster.stop("fast" if status == 0 else "immediate")
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
