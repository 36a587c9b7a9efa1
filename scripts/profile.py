#!/usr/bin/env python3
"""The measuring half of scripts/profile (run that, not this: it starts PostgreSQL, builds the
profiling binary and installs PgBouncer and valgrind first).

Counts the instructions each pooler executes per transaction, with valgrind's callgrind: a
count that does not depend on how busy the machine is (the same binary and inputs give the
same figure within about 1 %), so a change to the data path can be judged on a noisy machine
where tps and CPU time cannot. For each workload and pooler: the pooler is started under
callgrind as in scripts/bench (same configuration, same pool), warmed up with a short pgbench,
its counters are zeroed, a fixed number of transactions is run, the counters are dumped, and
the instructions are divided by the transactions pgbench reports. Start-up and warm-up are
left out. With --floor-dir, bench/floor's two minimal relays are counted the same way (not
for -S -C: they model no login work): what an event loop costs per transaction before any
pooler feature (BENCHMARKS.md, "The floor"). Python 3 standard library only; the pooler
classes are scripts/bench.py's.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (scripts/bench.py: Pooler, free_port, RUN_AS)

# name -> (pgbench workload args, clients, transactions per client, new connection per tx)
WORKLOADS = {
    "select-c10": (["-S"], 10, 2000, False),
    "tpcb-c10": ([], 10, 300, False),
    "select-C-c10": (["-S"], 10, 100, True),
}
WARMUP_PER_CLIENT = 100
# bench/floor's relays (binary name -> column label), counted with --floor-dir.
FLOORS = {"floor-mio": "mio floor", "floor-tokio": "tokio floor"}


def pgbench(port, workload, per_client):
    args, clients, _, per_tx = WORKLOADS[workload]
    cmd = ["pgbench", "-n", *args, "-c", str(clients), "-j", "2", "-t", str(per_client),
           "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    if per_tx:
        cmd.append("-C")
    cmd.append("bench")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed ({out.returncode}): {' '.join(cmd)}\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    m = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    if not m:
        raise RuntimeError(f"no transaction count in pgbench's output:\n{out.stdout[-2000:]}")
    return int(m.group(1))


def callgrind_control(option, pid):
    # callgrind_control talks to the process through files only its user may read.
    subprocess.run(["runuser", "-u", bench.RUN_AS, "--", "callgrind_control", option, str(pid)],
                   check=True, capture_output=True, timeout=120)


def total_instructions(path):
    """The dump's total (its `totals:` or `summary:` line), None while it is not written."""
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def top_functions(path, n):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", str(path)],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line and float(m.group(2)) < 50:
            rows.append((int(m.group(1).replace(",", "")), m.group(3)))
    return rows[:n]


def measure(args, kind, workload):
    _, clients, per_client, _ = WORKLOADS[workload]
    out_dir = Path(args.work) / f"callgrind-{kind}-{workload}"
    out_dir.mkdir()
    shutil.chown(out_dir, bench.RUN_AS)
    wrap = ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no",
            f"--callgrind-out-file={out_dir}/callgrind.out"]
    pooler = bench.Pooler(kind, args, args.work, args.pool_size, wrap=wrap, start_limit=120.0)
    try:
        pgbench(pooler.port, workload, WARMUP_PER_CLIENT)
        callgrind_control("--zero", pooler.pid)
        done = pgbench(pooler.port, workload, per_client)
        callgrind_control("--dump", pooler.pid)
        # The dump is written by the process itself, between two of its instructions, and
        # ends with its totals line: wait for that, not for the file to appear.
        deadline = time.monotonic() + 60
        instructions = None
        while instructions is None:
            dumps = sorted(out_dir.glob("callgrind.out.*"))
            instructions = total_instructions(dumps[-1]) if dumps else None
            if instructions is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"callgrind wrote no complete dump into {out_dir}")
                time.sleep(0.2)
        top = top_functions(dumps[-1], args.top) if args.top else []
        keep = os.environ.get("PROFILE_KEEP")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(dumps[-1], Path(keep) / f"{kind}-{workload}.callgrind")
    finally:
        pooler.stop()
    expected = clients * per_client
    if done != expected:
        raise RuntimeError(f"{kind} {workload}: {done} transactions of {expected}")
    return {"instructions": instructions, "transactions": done, "top": top}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--sidecar", required=True, help="the profiling build of the sidecar")
    p.add_argument("--work", required=True)
    p.add_argument("--pool-size", type=int, default=20)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    p.add_argument("--floor-dir", help="also count bench/floor's two relays, built here")
    args = p.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")

    # valgrind names the files callgrind_control reaches it through after $USER, and the
    # poolers run as RUN_AS with this process's environment.
    os.environ["USER"] = os.environ["LOGNAME"] = bench.RUN_AS
    floors = FLOORS if args.floor_dir else {}
    rows = []
    for workload in workloads:
        per_tx = {}
        for kind in ["pgbouncer", "poolwarden", *floors]:
            if kind in floors and WORKLOADS[workload][3]:
                # A login per transaction: the floors' trust login with a fixed greeting
                # models none of a pooler's login work, so their count would mean nothing.
                continue
            print(f"==> {workload}: {kind} under callgrind", flush=True)
            c = measure(args, kind, workload)
            per_tx[kind] = c["instructions"] / c["transactions"]
            print(f"    {c['transactions']} transactions, {per_tx[kind]:,.0f} instructions each",
                  flush=True)
            for n, name in c["top"]:
                print(f"    {n / c['transactions']:>8,.0f}  {name[:150]}")
        rows.append((workload, per_tx))

    print("\nInstructions per transaction in the pooler (callgrind; start-up and warm-up left out)")
    print(f"{'workload':<14} {'PgBouncer':>11} {'poolwarden':>11} {'pw/PgB':>7}"
          + "".join(f" {label:>12}" for label in floors.values()))
    for workload, c in rows:
        pgb, pw = c["pgbouncer"], c["poolwarden"]
        print(f"{workload:<14} {pgb:>11,.0f} {pw:>11,.0f} {pw / pgb:>7.2f}"
              + "".join(f" {c[kind]:>12,.0f}" if kind in c else f" {'—':>12}"
                        for kind in floors))


if __name__ == "__main__":
    main()
