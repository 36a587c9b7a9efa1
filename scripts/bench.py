#!/usr/bin/env python3
"""The measuring half of scripts/bench (run that, not this: it starts PostgreSQL, builds the
release binary and installs PgBouncer first).

For every cell (workload x clients) and every round, the targets: PostgreSQL directly,
PgBouncer, poolwarden-sidecar. Both poolers are started fresh for each round of a cell (so a
peak RSS, VmHWM, belongs to that round) and warmed up with a short pgbench; then each target's
measured time runs in slices (BENCH_SLICES, 4 of 5 s by default) that take turns, the order
reversed every other slice (A B B A), so the two poolers' figures of a round come from the
same minute of the machine's life. Each slice is measured: the pooler's CPU time from
/proc/PID/stat (utime + stime, all threads) before and after, transactions and
per-transaction latencies from pgbench's log (-l); a round's figures sum its slices. Rounds
also alternate the poolers' order and the table shows medians over rounds; the verdict table
adds each round's own ratios, to show what the machine's drift does to a verdict. Then the
memory check: 1,000 clients log in to each pooler and stay idle; VmRSS is read. Python 3
standard library only.

BENCH_AA=1 (calibration, never recorded): the poolwarden slot runs a second PgBouncer, set up
as the first. Its verdicts are what the machine's noise alone does to two identical poolers:
how many of the targets a pooler exactly as fast as PgBouncer meets on this machine.
"""

import argparse
import asyncio
import datetime as dt
import glob
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN_AS = "postgres"

# name -> (pgbench workload args, clients, new connection per transaction)
CELLS = {
    "select-c10": (["-S"], 10, False),
    "select-c50": (["-S"], 50, False),
    "tpcb-c10": ([], 10, False),
    "tpcb-c50": ([], 50, False),
    "select-C-c10": (["-S"], 10, True),
    "select-C-c50": (["-S"], 50, True),
}
TARGETS = ("direct", "pgbouncer", "poolwarden")
LABEL = {"direct": "direct", "pgbouncer": "PgBouncer", "poolwarden": "poolwarden"}


def calibrating():
    """BENCH_AA: the poolwarden slot is a second PgBouncer (an A/A run, see the docstring)."""
    return os.environ.get("BENCH_AA", "") not in ("", "0")


def kind_for(target):
    """The pooler a target runs: itself, except poolwarden's slot in an A/A run."""
    return "pgbouncer" if target == "poolwarden" and calibrating() else target


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_accepting(port, proc, log, limit=20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"pooler exited ({proc.returncode}):\n{Path(log).read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"pooler did not accept clients in {limit} s:\n{Path(log).read_text()[-3000:]}")


def cpu_ticks(pid):
    # Fields after the ")" of the command name: utime is field 14, stime 15 (1-based).
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def run_queue_ns(pid):
    """Nanoseconds the pooler's threads have run and have waited on a run queue for a CPU
    (/proc/PID/task/TID/schedstat; threads that ended are not counted)."""
    ran = waited = 0
    for stat in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            r, w, _slices = Path(stat).read_text().split()
        except (OSError, ValueError):
            continue
        ran += int(r)
        waited += int(w)
    return ran, waited


def status_kib(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


class Pooler:
    """One pooler process, started for one run and stopped after it."""

    def __init__(self, kind, args, work, pool_size, max_overflow=0, wrap=(), start_limit=20.0):
        """`wrap`: a command the pooler runs under (scripts/profile's valgrind); `start_limit`:
        seconds it has to start accepting clients."""
        self.kind = kind
        self.port = free_port()
        self.dir = Path(work) / f"{kind}-{self.port}"
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, RUN_AS)
        self.log = self.dir / "log"
        if kind == "pgbouncer":
            (self.dir / "users.txt").write_text(f'"{RUN_AS}" ""\n')
            (self.dir / "pgbouncer.ini").write_text(
                "[databases]\n"
                f"bench = host=127.0.0.1 port={args.pg_port} dbname=bench user=postgres\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {self.dir}/users.txt\n"
                "pool_mode = transaction\n"
                f"default_pool_size = {pool_size}\nmin_pool_size = 0\n"
                f"reserve_pool_size = {max_overflow}\nreserve_pool_timeout = 0\n"
                f"max_db_connections = {pool_size + max_overflow}\n"
                "max_client_conn = 2000\n"
                "log_connections = 0\nlog_disconnections = 0\n"
                f"logfile = {self.log}\n"
                "ignore_startup_parameters = extra_float_digits\n")
            cmd = ["pgbouncer", str(self.dir / "pgbouncer.ini")]
        elif kind.startswith("floor-"):
            # scripts/profile's floor relays (bench/floor): trust, the same pool size.
            cmd = [str(Path(args.floor_dir) / kind), f"127.0.0.1:{self.port}",
                   f"127.0.0.1:{args.pg_port}", str(pool_size)]
        else:
            # Written only when asked for: a build from before data_path refuses the key.
            data_path_line = (f"data_path: {data_path()}\n"
                              if "BENCH_DATA_PATH" in os.environ else "")
            data_path_line += f"worker_threads: {worker_threads()}\n"
            (self.dir / "poolwarden.yaml").write_text(
                f"listen: 127.0.0.1:{self.port}\nadmin_listen: 127.0.0.1:{free_port()}\n"
                "mode: transaction\n"
                f"{data_path_line}"
                "databases:\n  - name: bench\n    host: 127.0.0.1\n"
                f"    port: {args.pg_port}\n    user: postgres\n    sslmode: disable\n"
                f"pool:\n  pool_size: {pool_size}\n  max_overflow: {max_overflow}\n"
                "  pool_timeout: 30s\n"
                "clients:\n  max_connections: 2000\n  auth: trust\n")
            cmd = [args.sidecar, "--config", str(self.dir / "poolwarden.yaml")]
        self.log.touch()
        for p in self.dir.iterdir():
            shutil.chown(p, RUN_AS)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POOLWARDEN_")}
        self.proc = subprocess.Popen(
            [*wrap, *cmd], stdout=subprocess.DEVNULL, stderr=open(self.log, "a"), env=env,
            user=RUN_AS, group=RUN_AS, extra_groups=[], cwd=self.dir)
        wait_accepting(self.port, self.proc, self.log, start_limit)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pgbench(args, port, cell, seconds, log_prefix=None):
    workload, clients, per_tx = CELLS[cell]
    cmd = ["pgbench", "-n", *workload, "-c", str(clients), "-j", "2", "-T", str(seconds),
           "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    if per_tx:
        cmd.append("-C")
    if log_prefix:
        cmd += ["-l", f"--log-prefix={log_prefix}"]
    cmd.append("bench")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed ({out.returncode}): {' '.join(cmd)}\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def latencies_us(prefix):
    lat = []
    for f in glob.glob(f"{prefix}.*"):
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
        os.unlink(f)
    return lat


def percentile(sorted_xs, q):
    if not sorted_xs:
        return float("nan")
    k = min(len(sorted_xs) - 1, max(0, round(q * (len(sorted_xs) - 1))))
    return sorted_xs[k]


def reset_tables(args):
    # What pgbench does before a run without -n, done directly so every target starts alike;
    # and more: pgbench_accounts vacuumed too and a checkpoint taken. Without them each TPC-B
    # run leaves dead row versions and dirty pages for the next, so TPC-B's tps fell from run
    # to run through the whole bench, and whichever pooler ran second in a round paid for the
    # first (the order alternates by round, so five rounds put PgBouncer first three times).
    subprocess.run(
        ["psql", "-XAqt", "-h", "127.0.0.1", "-p", str(args.pg_port), "-U", "postgres", "-d",
         "bench", "-c", "VACUUM pgbench_branches", "-c", "VACUUM pgbench_tellers",
         "-c", "VACUUM pgbench_accounts", "-c", "TRUNCATE pgbench_history",
         "-c", "CHECKPOINT"],
        check=True, capture_output=True)


def pgbench_figures(out):
    """Transactions, tps and failed transactions from pgbench's report."""
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    tx = int(m.group(1)) if m else 0
    m = re.search(r"tps = ([\d.]+) \((?:without|excluding)", out) or re.search(r"tps = ([\d.]+)", out)
    tps = float(m.group(1)) if m else 0.0
    m = re.search(r"number of failed transactions: (\d+)", out)
    failed = int(m.group(1)) if m else 0
    return tx, tps, failed


def slice_order(order, i):
    """The targets' order in slice i of a round: `order`, then reversed, and so on. The two
    poolers' slices then sit symmetrically in time (A B B A), so a drift of the machine's
    speed through the round falls on both alike."""
    return tuple(order) if i % 2 == 0 else tuple(reversed(order))


def measure_cell(args, cell, order, seconds, slices, warmup):
    """One round of one cell: the poolers started fresh and warmed up, then each target's
    `seconds` measured in `slices` slices that take turns (slice_order), so a change in the
    machine's speed that lasts longer than a slice or two falls on every target alike. One
    row per target: transactions, tps, latencies and the pooler's CPU summed over its
    slices."""
    per_slice = max(1, seconds // slices)
    poolers = {}
    acc = {t: {"tx": 0, "time": 0.0, "failed": 0, "lat": [], "cpu": 0, "ran": 0, "waited": 0}
           for t in order}
    try:
        for t in order:
            if t != "direct":
                poolers[t] = Pooler(kind_for(t), args, args.work, args.pool_size)
        if warmup:
            for t in order:
                reset_tables(args)
                pgbench(args, poolers[t].port if t in poolers else args.pg_port, cell, warmup)
        for i in range(slices):
            for t in slice_order(order, i):
                reset_tables(args)
                pooler = poolers.get(t)
                port = pooler.port if pooler else args.pg_port
                cpu0 = cpu_ticks(pooler.pid) if pooler else 0
                sched0 = run_queue_ns(pooler.pid) if pooler else (0, 0)
                prefix = f"{args.work}/pgb-{cell}-{t}-{i}"
                out = pgbench(args, port, cell, per_slice, log_prefix=prefix)
                cpu1 = cpu_ticks(pooler.pid) if pooler else 0
                sched1 = run_queue_ns(pooler.pid) if pooler else (0, 0)
                tx, tps, failed = pgbench_figures(out)
                a = acc[t]
                a["tx"] += tx
                a["time"] += tx / tps if tps else 0.0
                a["failed"] += failed
                a["lat"] += latencies_us(prefix)
                a["cpu"] += cpu1 - cpu0
                a["ran"] += sched1[0] - sched0[0]
                a["waited"] += sched1[1] - sched0[1]
        hwm = {t: status_kib(p.pid, "VmHWM") for t, p in poolers.items()}
    finally:
        for p in poolers.values():
            p.stop()
    rows = []
    for t in order:
        a = acc[t]
        lat = sorted(a["lat"])
        r = {
            "cell": cell, "target": t, "tps": a["tx"] / a["time"] if a["time"] else 0.0,
            "transactions": a["tx"], "failed": a["failed"], "slices": slices,
            "avg_ms": (sum(lat) / len(lat) / 1000) if lat else float("nan"),
            "p99_ms": percentile(lat, 0.99) / 1000,
        }
        if t in poolers:
            r["cpu_us_per_tx"] = a["cpu"] / CLK_TCK * 1e6 / max(a["tx"], 1)
            r["peak_rss_mib"] = hwm[t] / 1024 if hwm[t] else float("nan")
            # How long the pooler waited for a CPU against how long it ran: when it waits
            # longer than it runs, the machine's scheduler, not the pooler's work, bounds tps
            # and p99.
            r["ran_s"] = a["ran"] / 1e9
            r["waited_s"] = a["waited"] / 1e9
        rows.append(r)
    return rows


async def idle_clients(port, n, user="postgres", database="bench"):
    """Open n client connections that complete startup (trust) and stay idle; return them."""
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                    for k, v in (("user", user), ("database", database),
                                 ("application_name", "bench-idle"))) + b"\0"
    packet = struct.pack("!ii", 8 + len(body), 196608) + body
    sem = asyncio.Semaphore(64)

    async def one():
        async with sem:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            w.write(packet)
            await w.drain()
            while True:
                head = await asyncio.wait_for(r.readexactly(5), 30)
                tag, length = head[:1], struct.unpack("!i", head[1:])[0]
                payload = await r.readexactly(length - 4)
                if tag == b"E":
                    raise RuntimeError(f"login refused: {payload!r}")
                if tag == b"Z":
                    return r, w

    conns = await asyncio.gather(*(one() for _ in range(n)))
    return conns


def memory_check(args, kind, n):
    # The hazard log's pool: 20/10 for poolwarden; PgBouncer gets the same 20 + 10 reserve.
    pooler = Pooler(kind_for(kind), args, args.work, 20, 10)
    try:
        base = status_kib(pooler.pid, "VmRSS")

        async def go():
            conns = await idle_clients(pooler.port, n)
            await asyncio.sleep(2)
            rss = status_kib(pooler.pid, "VmRSS")
            hwm = status_kib(pooler.pid, "VmHWM")
            for _, w in conns:
                w.write(b"X\0\0\0\x04")
                w.close()
            return rss, hwm

        rss, hwm = asyncio.run(go())
    finally:
        pooler.stop()
    return {"target": kind, "clients": n, "rss_start_mib": base / 1024,
            "rss_idle_mib": rss / 1024, "hwm_mib": hwm / 1024}


def med(rows, key):
    xs = [r[key] for r in rows if key in r and r[key] == r[key]]
    return statistics.median(xs) if xs else float("nan")


def paired(rows, key):
    """poolwarden / PgBouncer for each round, in round order: the two runs of a round are
    next to each other in time, so these show how far the machine's drift moves the ratio (the
    verdict is on the medians)."""
    pgb = {r["round"]: r.get(key) for r in rows["pgbouncer"]}
    out = []
    for r in sorted(rows["poolwarden"], key=lambda r: r["round"]):
        b, w = pgb.get(r["round"]), r.get(key)
        out.append(w / b if b and w is not None else float("nan"))
    return out


def fmt(x, digits=1):
    return "—" if x is None or x != x else f"{x:,.{digits}f}"


def machine(args):
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    kib = int(Path("/proc/meminfo").read_text().split()[1])
    pg = subprocess.run(["psql", "-XAtq", "-h", "127.0.0.1", "-p", str(args.pg_port), "-U",
                         "postgres", "-c", "SHOW server_version"],
                        capture_output=True, text=True).stdout.split()[0]
    pgb = subprocess.run(["pgbouncer", "--version"], capture_output=True,
                         text=True).stdout.splitlines()[0]
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPU ({cpu}), {kib / 1024 / 1024:.0f} GiB RAM, Linux "
            f"{platform.release()}, PostgreSQL {pg}, {pgb}; load average at the start "
            f"{load[0]:.1f}")


def data_path():
    """The sidecar's data_path for this run (BENCH_DATA_PATH, default the sidecar's own,
    event_loop)."""
    return os.environ.get("BENCH_DATA_PATH", "event_loop")


def worker_threads():
    """The sidecar's worker_threads for this run (BENCH_WORKER_THREADS, default 1): with
    data_path event_loop, its number of loops."""
    return int(os.environ.get("BENCH_WORKER_THREADS", "1"))


def report(args, results, memory, started, host, seconds, rounds, slices):
    cells = [c for c in args.cells]
    aa = ("**A/A calibration (BENCH_AA=1): the column and rows named poolwarden are a second "
          "PgBouncer, set up as the first.** " if calibrating() else "")
    lines = [f"{aa}Run {started:%Y-%m-%d %H:%M} UTC, {seconds} s per run in {slices} slice(s) of "
             f"{seconds // slices} s taking turns, {rounds} round(s), medians; pool "
             f"{args.pool_size} server connections (transaction mode, trust auth) for both "
             f"poolers; poolwarden's data_path: {data_path()}, worker_threads: "
             f"{worker_threads()}; pgbench -j 2, scale {args.scale}. Machine: {host}.", "",
             "| Workload | Clients | Target | tps | avg ms | p99 ms | p99 added ms | "
             "pooler CPU µs/tx | pooler peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdict = ["", "| Workload | Clients | tps pw/PgB (≥ 1.0) | CPU µs/tx pw/PgB (≤ 1.0) | "
               "p99 added pw vs PgB ms | peak RSS pw MiB | Targets | "
               "round by round: tps; CPU pw/PgB |",
               "|---|---|---|---|---|---|---|---|"]
    waits = ["", f"The pooler's threads on the CPUs (medians, seconds of each {seconds} s run, "
             "/proc schedstat): running, and waiting on a run queue for a CPU. A pooler that "
             "waits longer than it runs is held back by the machine's scheduler, not by its "
             "own work.", "",
             "| Workload | Clients | PgBouncer ran / waited s | poolwarden ran / waited s |",
             "|---|---|---|---|"]
    for cell in cells:
        workload, clients, per_tx = CELLS[cell]
        wl = ("-S" if workload else "TPC-B") + (" -C" if per_tx else "")
        rows = {t: [r for r in results if r["cell"] == cell and r["target"] == t]
                for t in TARGETS}
        direct_p99 = med(rows["direct"], "p99_ms")
        m = {}
        for t in TARGETS:
            if not rows[t]:
                continue
            tps, avg, p99 = med(rows[t], "tps"), med(rows[t], "avg_ms"), med(rows[t], "p99_ms")
            cpu, rss = med(rows[t], "cpu_us_per_tx"), med(rows[t], "peak_rss_mib")
            added = p99 - direct_p99 if t != "direct" else float("nan")
            m[t] = (tps, cpu, added, rss)
            lines.append(f"| {wl} | {clients} | {LABEL[t]} | {fmt(tps, 0)} | {fmt(avg, 3)} | "
                         f"{fmt(p99, 3)} | {fmt(added, 3)} | {fmt(cpu, 1)} | {fmt(rss, 1)} |")
        if "pgbouncer" in m and "poolwarden" in m:
            (bt, bc, ba, _), (wt, wc, wa, wr) = m["pgbouncer"], m["poolwarden"]
            tr, cr = wt / bt if bt else float("nan"), wc / bc if bc else float("nan")
            ok = []
            if not per_tx:
                ok.append("tps " + ("met" if tr >= 1.0 else "MISSED"))
            ok.append("CPU " + ("met" if cr <= 1.0 else "MISSED"))
            ok.append("p99 " + ("met" if wa <= ba else "MISSED"))
            if clients >= 50 and not per_tx:
                ok.append("RSS " + ("met" if wr <= 16 else "MISSED"))
            spread = (" ".join(fmt(x, 2) for x in paired(rows, "tps")) + "; "
                      + " ".join(fmt(x, 2) for x in paired(rows, "cpu_us_per_tx")))
            verdict.append(f"| {wl} | {clients} | {fmt(tr, 2)} | {fmt(cr, 2)} | "
                           f"{fmt(wa, 3)} vs {fmt(ba, 3)} | {fmt(wr, 1)} | {', '.join(ok)} | "
                           f"{spread} |")
            ran_waited = {t: f"{fmt(med(rows[t], 'ran_s'))} / {fmt(med(rows[t], 'waited_s'))}"
                          for t in ("pgbouncer", "poolwarden")}
            waits.append(f"| {wl} | {clients} | {ran_waited['pgbouncer']} | "
                         f"{ran_waited['poolwarden']} |")
    out = lines + verdict + waits
    if memory:
        out += ["", f"Idle clients: {memory[0]['clients']} client connections logged in and "
                "idle, pool 20/10 (PgBouncer: pool 20 + reserve 10).", "",
                "| Target | RSS before MiB | RSS with idle clients MiB | peak MiB | Target |",
                "|---|---|---|---|---|"]
        for m in memory:
            tgt = ("≤ 32 MiB " + ("met" if m["rss_idle_mib"] <= 32 else "MISSED")
                   if m["target"] == "poolwarden" else "")
            out.append(f"| {LABEL[m['target']]} | {fmt(m['rss_start_mib'])} | "
                       f"{fmt(m['rss_idle_mib'])} | {fmt(m['hwm_mib'])} | {tgt} |")
    return "\n".join(out) + "\n"


def record(text):
    body = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# poolwarden benchmarks\n"
    if BEGIN not in body:
        body = body.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS.write_text(head + BEGIN + "\n" + text + END + tail)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--sidecar", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    seconds = env_int("BENCH_SECONDS", 3 if quick else 20)
    rounds = env_int("BENCH_ROUNDS", 1 if quick else 2)
    warmup = env_int("BENCH_WARMUP", 1 if quick else 2)
    slices = env_int("BENCH_SLICES", 1 if quick else 4)
    if slices < 1 or seconds % slices:
        sys.exit(f"BENCH_SLICES ({slices}) must divide BENCH_SECONDS ({seconds})")
    args.pool_size = env_int("BENCH_POOL_SIZE", 20)
    args.scale = env_int("BENCH_SCALE", 10)
    idle_n = env_int("BENCH_IDLE_CLIENTS", 1000)
    args.cells = [c.strip() for c in os.environ.get("BENCH_CELLS", ",".join(CELLS)).split(",")
                  if c.strip()]
    for c in args.cells:
        if c not in CELLS:
            sys.exit(f"unknown cell {c!r}; known: {', '.join(CELLS)}")
    record_it = (os.environ.get("BENCH_RECORD", "0" if quick else "1") not in ("", "0")
                 and not calibrating())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 8192) if hard == resource.RLIM_INFINITY else max(soft, min(8192, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    started = dt.datetime.now(dt.timezone.utc)
    host = machine(args)
    runs = len(args.cells) * len(TARGETS) * rounds
    # Each slice and warm-up also pays for the tables' reset and pgbench's start (~2 s).
    minutes = runs * (seconds + warmup + 2 * (slices + 1)) // 60 + 1
    print(f"==> {runs} runs of {seconds} s in {slices} slice(s) (+{warmup} s warm-up each), "
          f"about {minutes} min; {host}", flush=True)
    results = []
    for rnd in range(rounds):
        order = TARGETS if rnd % 2 == 0 else ("direct", "poolwarden", "pgbouncer")
        for cell in args.cells:
            for r in measure_cell(args, cell, order, seconds, slices, warmup):
                r["round"] = rnd + 1
                results.append(r)
                extra = (f" cpu {r['cpu_us_per_tx']:.1f} µs/tx rss {r['peak_rss_mib']:.1f} MiB"
                         f" ran {r['ran_s']:.1f} s waited {r['waited_s']:.1f} s"
                         if "cpu_us_per_tx" in r else "")
                print(f"round {rnd + 1} {cell:<13} {r['target']:<10} tps {r['tps']:>9.0f} "
                      f"avg {r['avg_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms"
                      f"{' failed ' + str(r['failed']) if r['failed'] else ''}{extra}",
                      flush=True)
    memory = []
    if idle_n > 0:
        for kind in ("pgbouncer", "poolwarden"):
            m = memory_check(args, kind, idle_n)
            memory.append(m)
            print(f"idle clients {kind:<10} {idle_n} clients: RSS {m['rss_start_mib']:.1f} -> "
                  f"{m['rss_idle_mib']:.1f} MiB (peak {m['hwm_mib']:.1f})", flush=True)
    text = report(args, results, memory, started, host, seconds, rounds, slices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"started": started.isoformat(), "machine": host, "seconds": seconds, "rounds": rounds,
         "slices": slices, "runs": results, "memory": memory}, indent=1))
    print("\n" + text)
    print(f"written to {out / 'results.md'} (raw: {out / 'results.json'})")
    if record_it:
        record(text)
        print(f"recorded in {BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
