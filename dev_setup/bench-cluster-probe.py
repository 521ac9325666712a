#!/usr/bin/env python3
"""Probes for dev_setup/bench-cluster.sh: watch a running collector from outside.

  watch  --pid P --out DIR [--target N] [--t0 EPOCH] [--samples FILE] [--interval S] [--timeout S]
         Every INTERVAL (default 0.1 s): the process's VmRSS and VmHWM (kB,
         /proc/P/status) and the lines written so far into DIR/*.jsonl (counted
         incrementally). One "t rss_kib hwm_kib lines" line per sample into
         FILE. With --target, exits 0 when the lines reach N and prints
         "seconds_since_t0 lines hwm_kib"; exits 1 if the process ends first or
         on timeout. Without --target, runs until the process ends (or
         --stop-file appears).
  rss    FILE [--from-line N]
         Peak and steady RSS of a samples file: prints "peak_mib steady_mib
         first_half_mib growth_mib samples", steady = median VmRSS of the
         second half of the samples taken after the lines reached N (default 0),
         growth = that minus the median of the first half.
  curve  FILE --from-line N --to-line M
         RSS over the stream: prints "rss_mib@25% rss_mib@50% rss_mib@75%
         rss_mib@100%", the VmRSS of the first sample at which the lines
         written reached N + k/4 × (M - N), to show whether it stays flat.
  swap   --module M --a A --b B --out DIR --log LOG --runs K [--fresh] [--timeout S]
         Hot-swap latency: K times, puts B in place of module M (copy to a temp
         file in M's directory, rename over M) and times rename → the first
         output line that only B keeps (type Normal: A is the Warning-only
         filter), and rename → the collector's "filter module swapped" log line
         (JSON log); then puts A back and waits until the stream settles.
         --fresh: each run's B is a new build (B's bytes plus a custom section
         naming the run), so no swap finds it in the compiled-module cache.
         Prints one "visible_ms logged_ms load_ms from_cache tier optimized_ms"
         line per run (optimized_ms: rename → "filter module optimized", -1 if
         the swap was not on baseline code).
  stats  prints "median min max" of the numbers on stdin.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import time
from datetime import datetime


class LineCounter:
    """Counts the lines of DIR/*.jsonl as they grow (reads only what is new).

    Files are tracked by inode, not by name: when the Volume exporter rotates
    events.jsonl (renames it), its lines are not counted a second time."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.offsets = {}
        self.lines = 0

    def poll(self, on_line=None):
        for path in glob.glob(os.path.join(self.out_dir, "*.jsonl")):
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    key = (st.st_dev, st.st_ino)
                    off = self.offsets.get(key, 0)
                    f.seek(off)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue
            chunk = data[: end + 1]
            self.offsets[key] = off + end + 1
            self.lines += chunk.count(b"\n")
            if on_line is not None:
                for line in chunk.splitlines():
                    on_line(line)
        return self.lines


def proc_status(pid):
    """(VmRSS, VmHWM) in kB, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    vals = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            vals[k] = int(v.split()[0])
    if "VmRSS" not in vals:
        return None  # a zombie
    return vals["VmRSS"], vals.get("VmHWM", vals["VmRSS"])


def cmd_watch(a):
    counter = LineCounter(a.out)
    t0 = a.t0 if a.t0 else time.time()
    samples = open(a.samples, "w") if a.samples else None
    deadline = time.time() + a.timeout
    hwm = 0
    while True:
        st = proc_status(a.pid)
        lines = counter.poll()
        now = time.time()
        if st is not None:
            hwm = max(hwm, st[1])
            if samples:
                samples.write(f"{now - t0:.3f} {st[0]} {st[1]} {lines}\n")
                samples.flush()
        if a.target and lines >= a.target:
            print(f"{now - t0:.3f} {lines} {hwm}")
            return 0
        if st is None:
            print(f"process {a.pid} ended with {lines} lines written", file=sys.stderr)
            return 0 if not a.target else 1
        if a.stop_file and os.path.exists(a.stop_file):
            return 0
        if now > deadline:
            print(f"timeout: {lines} lines written", file=sys.stderr)
            return 1
        time.sleep(a.interval)


def median(xs):
    return statistics.median(xs) if xs else 0.0


def cmd_rss(a):
    rows = []
    with open(a.file) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                rows.append((float(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])))
    if not rows:
        print("no samples", file=sys.stderr)
        return 1
    peak = max(r[2] for r in rows) / 1024
    phase = [r for r in rows if r[3] >= a.from_line] or rows
    half = len(phase) // 2
    first = [r[1] / 1024 for r in phase[:half]] or [phase[0][1] / 1024]
    second = [r[1] / 1024 for r in phase[half:]]
    print(f"{peak:.1f} {median(second):.1f} {median(first):.1f} {median(second) - median(first):+.1f} {len(rows)}")
    return 0


def cmd_curve(a):
    rows = []
    with open(a.file) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                rows.append((int(parts[1]), int(parts[3])))
    out = []
    for k in (1, 2, 3, 4):
        mark = a.from_line + k * (a.to_line - a.from_line) // 4
        hit = next((rss for rss, lines in rows if lines >= mark), None)
        out.append(f"{hit / 1024:.1f}" if hit is not None else "-")
    print(" ".join(out))
    return 0


def log_swaps(log_path, after, what="filter module swapped"):
    """(timestamp, load_ms, from_cache, tier) of the log lines containing `what`
    written after `after` (epoch s)."""
    out = []
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if what not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                ts = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
                if ts < after:
                    continue
                fields = rec.get("fields", {})
                load = str(fields.get("load_time", ""))
                out.append((ts, parse_debug_duration_ms(load), fields.get("from_cache"), fields.get("tier", "optimized")))
    except FileNotFoundError:
        pass
    return out


def parse_debug_duration_ms(s):
    """Rust's Debug of a Duration ("12.3ms", "1.2s", "850µs") in ms; -1 if unknown."""
    for unit, factor in (("ms", 1.0), ("µs", 1e-3), ("us", 1e-3), ("ns", 1e-6), ("s", 1e3)):
        if s.endswith(unit):
            try:
                return float(s[: -len(unit)]) * factor
            except ValueError:
                return -1.0
    return -1.0


def is_normal(line):
    """Whether an output line is an event of type Normal (only version B keeps those)."""
    try:
        return json.loads(line).get("type") == "Normal"
    except ValueError:
        return False


def leb128(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def new_build(src, run):
    """`src`'s bytes plus a custom section (id 0) naming the run: the same code,
    a new sha256. Custom sections may end a core module and a component alike."""
    with open(src, "rb") as f:
        wasm = f.read()
    name = b"event-collector-bench"
    payload = f"run {run} at {time.time():.6f}".encode()
    body = leb128(len(name)) + name + payload
    return wasm + b"\x00" + leb128(len(body)) + body


def put_in_place(src, module, data=None):
    tmp = os.path.join(os.path.dirname(module), ".incoming.wasm.tmp")
    if data is None:
        shutil.copyfile(src, tmp)
    else:
        with open(tmp, "wb") as f:
            f.write(data)
    t = time.time()
    os.rename(tmp, module)
    return t


def cmd_swap(a):
    counter = LineCounter(a.out)
    counter.poll()
    for run in range(a.runs):
        # A back in place, then wait until no Normal event has come out for a while.
        put_in_place(a.a, a.module)
        quiet_since = time.time()
        deadline = time.time() + a.timeout
        while time.time() - quiet_since < a.settle:
            seen = []
            counter.poll(lambda line: seen.append(is_normal(line)))
            if any(seen):
                quiet_since = time.time()
            if time.time() > deadline:
                print("the stream did not settle on version A", file=sys.stderr)
                return 1
            time.sleep(0.01)
        # B in place: the first Normal event out is B's.
        counter.poll()
        t0 = put_in_place(a.b, a.module, new_build(a.b, run) if a.fresh else None)
        visible = None
        deadline = t0 + a.timeout
        while visible is None and time.time() < deadline:
            found = []
            counter.poll(lambda line: found.append(is_normal(line)))
            if any(found):
                visible = time.time()
                break
            time.sleep(0.001)
        if visible is None:
            print("no event of version B came out", file=sys.stderr)
            return 1
        # The swap log line may come a moment later than the file poll; wait for it briefly.
        swaps = []
        for _ in range(200):
            swaps = log_swaps(a.log, t0)
            if swaps:
                break
            time.sleep(0.01)
        logged, load, cached, tier = swaps[0] if swaps else (float("nan"), -1.0, None, "?")
        optimized_ms = -1.0
        if tier == "baseline":
            # Cranelift's code takes over in the background: wait for that line.
            for _ in range(3000):
                done = log_swaps(a.log, t0, "filter module optimized")
                if done:
                    optimized_ms = (done[0][0] - t0) * 1e3
                    break
                time.sleep(0.01)
        print(
            f"{(visible - t0) * 1e3:.1f} {(logged - t0) * 1e3:.1f} {load:.1f} {str(cached).lower()} {tier} {optimized_ms:.1f}",
            flush=True,
        )
    return 0


def cmd_stats(_a):
    xs = sorted(float(x) for x in sys.stdin.read().split())
    if not xs:
        print("0 0 0")
        return 1
    print(f"{median(xs):.6f} {xs[0]:.6f} {xs[-1]:.6f}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--target", type=int, default=0)
    w.add_argument("--t0", type=float, default=0.0)
    w.add_argument("--samples")
    w.add_argument("--interval", type=float, default=0.1)
    w.add_argument("--timeout", type=float, default=3600)
    w.add_argument("--stop-file")
    r = sub.add_parser("rss")
    r.add_argument("file")
    r.add_argument("--from-line", type=int, default=0)
    c = sub.add_parser("curve")
    c.add_argument("file")
    c.add_argument("--from-line", type=int, default=0)
    c.add_argument("--to-line", type=int, required=True)
    s = sub.add_parser("swap")
    s.add_argument("--module", required=True)
    s.add_argument("--a", required=True)
    s.add_argument("--b", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--fresh", action="store_true")
    s.add_argument("--settle", type=float, default=1.0)
    s.add_argument("--timeout", type=float, default=60)
    sub.add_parser("stats")
    a = p.parse_args()
    return {"watch": cmd_watch, "rss": cmd_rss, "curve": cmd_curve, "swap": cmd_swap, "stats": cmd_stats}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
