"""CSV to validated Parquet: modelbuild's ingest -> clean -> validate against plain pandas, in the same run.

A CSV of --size-mb MiB (1 GiB by default) is generated with numpy/pyarrow, written in chunks and kept in the
page cache. Columns: `id` (unique int, shuffled), `age` and `qty` (ints), `score` (float, ~3% empty),
`price` (float, ~1% empty and ~1% `NA`), `tier` (categorical: padded values, legacy codes B/S/G/P, `?` and
empty cells), `comment` (free text, sometimes with commas, hence quoted; ~2% empty).

Measured, each in its own subprocess, every one reading the same file from the page cache:
  modelbuild       `modelbuild --store EMPTY build --json -j 1 recipe.yaml`: ingest -> clean (strip, na_values,
                   value_map, drop_duplicates on id) -> validate (YAML schema: dtypes, ranges, isin, unique id)
  pandas bare      `pd.read_csv(path).to_parquet(out)`: what a user writes to "just convert it"
  pandas+pandera   the same cleaning and a whole-frame pandera validation, then to_parquet: the same work

Time: wall time of the whole subprocess (interpreter start and imports included, for every tool), and its
CPU time (user+sys of all its processes), which a busy host inflates far less than wall time.
Memory: peak RSS. Each command runs under a small wrapper whose `getrusage(RUSAGE_CHILDREN).ru_maxrss` is
the largest RSS any descendant reached (the kernel's count: exact, no sampling). modelbuild runs one worker
process per step (-j 1, one at a time) beside the CLI process, so the tree is also sampled with psutil every
50 ms: the sampled peak of the tree's summed RSS, each process's own peak (per step), and the anonymous part
(RSS less file-backed pages: the CLI hashes the source through mmap, and mapped page-cache pages count as
RSS). The peak used for the ratio is the larger of ru_maxrss and the sampled tree sum.

Run with the Python that has modelbuild, pandas, pyarrow, pandera and psutil installed:
    .venv/bin/python benchmarks/ingest.py                 # 1 GiB CSV, one round (2-3 minutes on 2 idle cores)
    .venv/bin/python benchmarks/ingest.py --repeat 3      # three rounds, order rotated, medians
    .venv/bin/python benchmarks/ingest.py --size-mb 64    # quick
Targets (issue 15): modelbuild throughput / pandas+pandera throughput >= 1.0 (the same work), and modelbuild peak /
pandas+pandera peak <= 0.5; pandas bare is shown for reference.
Always exits 0 after printing the table (2 if a requirement is missing, 1 if a command fails); a missed
target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIERS = ["bronze", "silver", "gold", "platinum"]
LEGACY = {"B": "bronze", "S": "silver", "G": "gold", "P": "platinum"}
WORDS = ("the a an of to and in on for with by from order delivery late early customer support refund "
         "package arrived damaged great service slow fast price quality product return again never always "
         "would recommend not happy very good bad ok excellent terrible box size colour wrong right item "
         "store online app website checkout payment card cash shipping free cost extra week day month").split()

RECIPE = """\
name: ingestbench
steps:
  raw:
    builder: ingest
    inputs: {data: {path: data.csv}}
  clean:
    builder: clean
    inputs: {table: raw}
    params:
      strip_whitespace: true
      na_values: ["?"]
      value_map: {tier: {B: bronze, S: silver, G: gold, P: platinum}}
      drop_duplicates: {subset: [id]}
  check:
    builder: validate
    inputs: {table: clean}
    params:
      schema:
        columns:
          id: {dtype: int64, unique: true, checks: {ge: 0}}
          age: {dtype: int64, checks: {in_range: {min: 18, max: 90}}}
          qty: {dtype: int64, checks: {ge: 0, le: 1000}}
          score: {dtype: float64, nullable: true, checks: {ge: 0, le: 100}}
          price: {dtype: float64, nullable: true, checks: {gt: 0}}
          tier: {dtype: str, nullable: true, checks: {isin: [bronze, silver, gold, platinum]}}
          comment: {dtype: str, nullable: true}
"""

PANDAS_BARE = """\
import sys
import pandas as pd
pd.read_csv(sys.argv[1]).to_parquet(sys.argv[2])
"""

# The pandas equivalent of the recipe, as a user would write it: the same rules in the same order
# (ingest already strips string cells and nulls pandas' default na_values, which read_csv does too), the
# same schema as a whole-frame lazy pandera validation, then to_parquet.
PANDAS_FULL = """\
import sys
import numpy as np
import pandas as pd
import pandera.pandas as pa

df = pd.read_csv(sys.argv[1])
for c in df.columns:
    if pd.api.types.is_string_dtype(df[c]):
        s = df[c].str.strip().str.normalize("NFC")
        df[c] = s.mask(s.isin(["?"]))
df["tier"] = df["tier"].replace({"B": "bronze", "S": "silver", "G": "gold", "P": "platinum"})
df = df.drop_duplicates(subset=["id"])
schema = pa.DataFrameSchema({
    "id": pa.Column("int64", pa.Check.ge(0), unique=True),
    "age": pa.Column("int64", pa.Check.in_range(18, 90)),
    "qty": pa.Column("int64", [pa.Check.ge(0), pa.Check.le(1000)]),
    "score": pa.Column("float64", [pa.Check.ge(0), pa.Check.le(100)], nullable=True),
    "price": pa.Column("float64", pa.Check.gt(0), nullable=True),
    "tier": pa.Column(str, pa.Check.isin(["bronze", "silver", "gold", "platinum"]), nullable=True),
    "comment": pa.Column(str, nullable=True),
})
schema.validate(df, lazy=True)
df.to_parquet(sys.argv[2])
"""

# Runs a command and reports, into the file argv[2], the largest RSS of any of its descendants (Linux:
# RUSAGE_CHILDREN's ru_maxrss is the max over all waited-for descendants, in KiB) and their CPU time.
WRAPPER = """\
import json, resource, subprocess, sys
rc = subprocess.call(json.loads(sys.argv[1]))
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[2], "w").write(json.dumps({"rc": rc, "maxrss": ru.ru_maxrss * 1024, "cpu": ru.ru_utime + ru.ru_stime}))
"""


def make_csv(path: Path, mb: int, seed: int) -> int:
    """Write about `mb` MiB of CSV in chunks of ~1M rows; returns the row count. Reads it back once so that
    every run below finds it in the page cache."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    # free text: a pool of distinct sentences drawn once, then picked per row by index (vectorised)
    lengths = rng.integers(3, 25, 200_000)
    picks = rng.integers(0, len(WORDS), int(lengths.sum()))
    pool, at = [], 0
    for n in lengths.tolist():
        words = [WORDS[i] for i in picks[at:at + n]]
        at += n
        if n > 8:
            words[n // 2] += ","  # a comma inside the value: the field gets quoted
        pool.append(" ".join(words).capitalize() + ".")
    pool = pa.array(pool, pa.string())
    tier_pool = pa.array([*TIERS, *LEGACY, " gold", "silver ", " bronze ", "?", None], pa.string())
    tier_p = np.array([0.25, 0.3, 0.2, 0.1, 0.02, 0.02, 0.02, 0.01, 0.02, 0.02, 0.01, 0.02, 0.01])

    target, written, rows = mb << 20, 0, 0
    with open(path, "wb") as f:
        writer = None
        while written < target:
            n = 1 << 20 if rows else 1 << 14  # a small first chunk measures the bytes per row
            ids = rows + rng.permutation(n)  # unique across the file, shuffled within each chunk
            score = np.round(np.clip(rng.normal(60, 15, n), 0, 100), 2)
            price = np.round(rng.lognormal(3, 1, n), 2)
            price_text = pc.cast(pa.array(price), pa.string())
            missing = rng.random(n)
            price_text = pc.if_else(pa.array(missing < 0.01), pa.scalar("NA"), price_text)
            price_text = pc.if_else(pa.array((missing >= 0.01) & (missing < 0.02)), pa.scalar(None, pa.string()),
                                    price_text)
            table = pa.table({
                "id": pa.array(ids),
                "age": pa.array(rng.integers(18, 91, n)),
                "qty": pa.array(rng.integers(0, 1001, n)),
                "score": pa.array(score, mask=rng.random(n) < 0.03),
                "price": price_text,
                "tier": tier_pool.take(pa.array(rng.choice(len(tier_pool), n, p=tier_p))),
                "comment": pool.take(pa.array(rng.integers(0, len(pool), n))),
            })
            table = table.set_column(6, "comment", pc.if_else(pa.array(rng.random(n) < 0.02),
                                                                pa.scalar(None, pa.string()), table.column(6)))
            if writer is None:
                writer = pcsv.CSVWriter(f, table.schema, write_options=pcsv.WriteOptions(quoting_style="needed"))
            if written:  # size the remaining chunks from the bytes per row seen so far
                left_rows = int((target - written) / (written / rows)) + 1
                if left_rows < n:
                    table = table.slice(0, left_rows)
            writer.write_table(table)
            f.flush()
            rows += table.num_rows
            written = f.tell()
        writer.close()
    with open(path, "rb") as f:  # into the page cache
        buf = bytearray(16 << 20)
        while f.readinto(buf):
            pass
    return rows


class Run:
    """One measured subprocess: wall time, ru_maxrss, and the psutil-sampled tree."""

    def __init__(self, label: str, cmd: list[str], cwd: Path, tmp: Path, interval: float):
        import psutil

        out, err, rus = tmp / f"{label}.out", tmp / f"{label}.err", tmp / f"{label}.rusage.json"
        procs: dict[int, dict] = {}  # pid -> {name, rss, anon}
        self.load = [os.getloadavg()[0]]
        tree_rss = tree_anon = samples = 0
        with open(out, "w") as fo, open(err, "w") as fe:
            t = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", WRAPPER, json.dumps(cmd), str(rus)], cwd=cwd,
                                    stdout=fo, stderr=fe)
            wrapper = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = anon = 0
                try:
                    kids = wrapper.children(recursive=True)
                except psutil.Error:
                    kids = []
                for k in kids:
                    try:
                        mi = k.memory_info()
                        p = procs.setdefault(k.pid, {"name": None, "rss": 0, "anon": 0})
                        if p["name"] is None:  # a fork shows its parent's command line until it execs
                            p["name"] = _proc_name(k, top=k.ppid() == proc.pid)
                    except psutil.Error:
                        continue
                    p = procs[k.pid]
                    p["rss"], p["anon"] = max(p["rss"], mi.rss), max(p["anon"], mi.rss - mi.shared)
                    rss, anon = rss + mi.rss, anon + mi.rss - mi.shared
                tree_rss, tree_anon, samples = max(tree_rss, rss), max(tree_anon, anon), samples + 1
                time.sleep(interval)
            self.wall = time.perf_counter() - t
        self.load.append(os.getloadavg()[0])
        res = json.loads(rus.read_text())
        self.rc, self.maxrss, self.stdout, self.stderr = res["rc"], res["maxrss"], out.read_text(), err.read_text()
        self.cpu = res["cpu"]
        self.tree_rss, self.tree_anon, self.procs, self.samples = tree_rss, tree_anon, procs, samples
        self.peak = max(self.maxrss, tree_rss)
        if self.rc != 0:
            raise SystemExit(f"{label} failed (exit {self.rc}): {' '.join(cmd)}\n{self.stdout[-3000:]}\n"
                             f"{self.stderr[-3000:]}")


def _proc_name(p, top: bool) -> str | None:
    """'main' for the command itself, 'worker STEP' for a modelbuild worker (the step read from its job
    file), 'worker #N' for the Nth job forked from the zygote (which carries the zygote's command line;
    with -j 1 the jobs run in build order), 'zygote', or None for a child that has not exec'd yet (ask
    again at the next sample)."""
    if top:
        return "main"
    cmd = p.cmdline()
    if "modelbuild.worker" in cmd:
        try:
            return "worker " + json.loads(Path(cmd[-1]).read_text())["step"]
        except (OSError, ValueError, KeyError):
            return "worker ?"
    if any("serve(" in part for part in cmd):
        parent = p.parent()
        if parent is not None and parent.cmdline() == cmd:
            _proc_name.forked = getattr(_proc_name, "forked", 0) + 1
            return f"worker #{_proc_name.forked}"
        return "zygote"
    return None


def check_requirements(mb: str) -> str | None:
    missing = []
    for module, hint in (("psutil", "psutil"), ("pandas", "pandas"), ("pyarrow", "pyarrow"),
                         ("pandera", "pandera"), ("numpy", "numpy")):
        try:
            __import__(module)
        except ImportError:
            missing.append(hint)
    if missing:
        return (f"missing Python packages: {', '.join(missing)}. Install them into this interpreter, e.g.\n"
                f"    {sys.executable} -m pip install {' '.join(missing)}\n"
                f"(or run with the project's venv: .venv/bin/python benchmarks/ingest.py; "
                f"`pip install -e .[data] psutil`)")
    if not (shutil.which(mb) or Path(mb).exists()):
        return f"modelbuild is not runnable as {mb!r}; pip install -e . (or pass --modelbuild)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="CSV size in MiB (default 1024)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the three runs (order rotated each round); medians are reported")
    ap.add_argument("--interval", type=float, default=0.05, help="psutil sampling interval, s (default 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modelbuild", help="modelbuild executable (default: beside this Python, else on PATH)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    beside = Path(sys.executable).parent / "modelbuild"
    mb = args.modelbuild or (str(beside) if beside.exists() else shutil.which("modelbuild") or "modelbuild")
    problem = check_requirements(mb)
    if problem:
        print(problem, file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="mb-ingest-"))
    labels = ["modelbuild", "pandas bare", "pandas+pandera"]
    results: dict[str, list[Run]] = {label: [] for label in labels}
    try:
        print(f"writing a {args.size_mb} MiB CSV in {tmp} ...", flush=True)
        t = time.perf_counter()
        csv = tmp / "data.csv"
        rows = make_csv(csv, args.size_mb, args.seed)
        size = csv.stat().st_size
        print(f"  {rows:,} rows, {size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s", flush=True)
        (tmp / "recipe.yaml").write_text(RECIPE)
        for i in range(args.repeat):
            for label in labels[i % 3:] + labels[:i % 3]:
                print(f"round {i + 1}/{args.repeat}: {label} ...", flush=True)
                _proc_name.forked = 0
                r = measure(label, mb, csv, tmp, args.interval)
                results[label].append(r)
                print(f"  {r.wall:.1f} s wall, {r.cpu:.1f} s CPU, peak {r.peak / 2**20:.0f} MiB, "
                      f"load {r.load[0]:.1f} -> {r.load[1]:.1f}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    report(results, size, rows, args)
    return 0


def measure(label: str, mb: str, csv: Path, tmp: Path, interval: float) -> Run:
    if label == "modelbuild":
        store = tmp / "store"
        shutil.rmtree(store, ignore_errors=True)
        cmd = [mb, "--store", str(store), "build", "--json", "-j", "1", "recipe.yaml"]
    else:
        code = PANDAS_BARE if label == "pandas bare" else PANDAS_FULL
        cmd = [sys.executable, "-c", code, str(csv), str(tmp / "out.parquet")]
    r = Run(label.replace(" ", "_").replace("+", "_"), cmd, tmp, tmp, interval)
    if label == "modelbuild":
        r.build = json.loads(r.stdout)
        built = [s["status"] for s in r.build["steps"]]
        if built != ["built"] * 3:
            raise SystemExit(f"modelbuild did not build all three steps: {built}")
        check = Path(r.build["steps"][-1]["path"])
        r.rows_out = json.loads((check / "table.json").read_text())["rows"]
        shutil.rmtree(store, ignore_errors=True)
    else:
        import pyarrow.parquet as pq

        r.rows_out = pq.ParquetFile(tmp / "out.parquet").metadata.num_rows
        (tmp / "out.parquet").unlink()
    return r


def report(results: dict, size: int, rows: int, args) -> None:
    mib = size / 2**20
    med = statistics.median

    class Summary:  # medians over the rounds
        def __init__(self, runs):
            self.wall, self.cpu = med(r.wall for r in runs), med(r.cpu for r in runs)
            self.peak, self.maxrss = med(r.peak for r in runs), med(r.maxrss for r in runs)
            self.tree_rss, self.tree_anon = med(r.tree_rss for r in runs), med(r.tree_anon for r in runs)
            self.rows_out, self.load = runs[0].rows_out, max(max(r.load) for r in runs)

    s = {k: Summary(v) for k, v in results.items()}
    n = len(next(iter(results.values())))
    print(f"\nCSV -> Parquet: {mib:.0f} MiB, {rows:,} rows, 7 columns; Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; median of {n} round(s)\n")
    print(f"{'pipeline':<16} {'wall s':>7} {'MiB/s':>7} {'CPU s':>7} {'peak MiB':>9} {'ru_maxrss':>10} "
          f"{'tree RSS':>9} {'tree anon':>10} {'rows out':>11} {'max load':>9}")
    for label, r in s.items():
        print(f"{label:<16} {r.wall:7.1f} {mib / r.wall:7.1f} {r.cpu:7.1f} {r.peak / 2**20:9.0f} "
              f"{r.maxrss / 2**20:10.0f} {r.tree_rss / 2**20:9.0f} {r.tree_anon / 2**20:10.0f} {r.rows_out:11,} "
              f"{r.load:9.1f}")

    m = sorted(results["modelbuild"], key=lambda r: r.wall)[(n - 1) // 2]  # the median round, for its steps
    print(f"\nmodelbuild by step, round with the median wall time ({m.wall:.1f} s): seconds from `build --json` "
          f"(the worker: build + commit); peaks sampled per process")
    print(f"{'step':<18} {'seconds':>8} {'share':>6} {'peak RSS MiB':>13} {'peak anon MiB':>14}")
    by_name: dict[str, dict] = {}
    for p in m.procs.values():
        q = by_name.setdefault(p["name"] or "?", {"rss": 0, "anon": 0})
        q["rss"], q["anon"] = max(q["rss"], p["rss"]), max(q["anon"], p["anon"])
    kinds = {"raw": "ingest", "clean": "clean", "check": "validate"}
    total = 0.0
    for k, st in enumerate(m.build["steps"], 1):
        q = by_name.get(f"worker {st['step']}") or by_name.get(f"worker #{k}", {"rss": 0, "anon": 0})
        total += st["seconds"]
        print(f"{st['step'] + ' (' + kinds.get(st['step'], '?') + ')':<18} {st['seconds']:8.1f} "
              f"{st['seconds'] / m.wall:6.0%} {q['rss'] / 2**20:13.0f} {q['anon'] / 2**20:14.0f}")
    q = by_name.get("main", {"rss": 0, "anon": 0})
    print(f"{'CLI process, rest':<18} {m.wall - total:8.1f} {(m.wall - total) / m.wall:6.0%} "
          f"{q['rss'] / 2**20:13.0f} {q['anon'] / 2**20:14.0f}   (hashing the source, keys, spawning, polling)")

    print("\nratios, modelbuild / pandas (throughput: higher is better; memory: lower is better)")
    for label in ("pandas bare", "pandas+pandera"):
        b, mm = s[label], s["modelbuild"]
        speed, cpu, mem = b.wall / mm.wall, b.cpu / mm.cpu, mm.peak / b.peak
        target = label == "pandas+pandera"
        print(f"vs {label:<15} throughput {speed:5.2f}x"
              + (f" (target >= 1.0: {'PASS' if speed >= 1.0 else 'MISS'})" if target else " " * 26)
              + f"   peak memory {mem:5.2f}x"
              + (f" (target <= 0.5: {'PASS' if mem <= 0.5 else 'MISS'})" if target else " " * 26)
              + f"   CPU-time throughput {cpu:4.2f}x   anon memory {mm.tree_anon / b.tree_anon:4.2f}x")
    ingest = next(st["seconds"] for st in m.build["steps"] if st["step"] == "raw")
    bare = sorted(results["pandas bare"], key=lambda r: r.wall)[(n - 1) // 2]
    print(f"like for like: the ingest step alone (CSV -> snappy Parquet + fingerprints + statistics, {ingest:.1f} s) "
          f"vs pandas bare ({bare.wall:.1f} s): {bare.wall / ingest:.2f}x")
    print(f"""
wall: the whole subprocess (interpreter start and imports included); MiB/s: CSV MiB / wall.
CPU s: user+sys of all its processes (getrusage RUSAGE_CHILDREN in a wrapper); steadier than wall on a busy host.
peak: max(ru_maxrss, tree RSS), the ratio's figure. ru_maxrss: getrusage(RUSAGE_CHILDREN) in a wrapper, the
  largest RSS of any one descendant (kernel, exact). tree RSS / anon: psutil samples every {args.interval * 1000:.0f} ms of
  the summed RSS of all descendants, and of RSS less file-backed pages (mmap'd page cache, shared libraries);
  samples may miss spikes shorter than the interval.
max load: the highest 1-min load average seen at the start or end of a run; above {os.cpu_count()} (the CPUs), other
  processes competed for the CPUs and wall times (not CPU times) are inflated.
modelbuild does more than read_csv + to_parquet: ingest and clean each read their input and write a new snappy
  Parquet table with row fingerprints and column statistics; validate checks the table and links it through
  unchanged; the CLI hashes the source and every output.""")
    busy = [k for k, v in s.items() if v.load > os.cpu_count()]
    if busy:
        print(f"WARNING: the host was busy (load above {os.cpu_count()}) during {', '.join(busy)}: compare the CPU "
              "columns, or run again on an idle machine")


if __name__ == "__main__":
    sys.exit(main())
