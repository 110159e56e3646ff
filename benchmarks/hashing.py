"""Hash throughput and CLI start-up of modelbuild, each against its baseline in the same run.

(a) `modelbuild.hashing.hash_file` (xxh3-128 over mmap) on a file in the page cache, in GB/s, against
    `hashlib.md5` (what DVC hashes with) and `hashlib.sha256` on the same file.   target: >= 5 GB/s
(b) median wall time of `modelbuild show RECIPE:STEP` (a tiny recipe built first into a temp store)
    against `python -c pass`, the interpreter's floor.                           target: < 150 ms
(c) in a subprocess, which heavy libraries the lineage verbs (`show` first) import: must be none of
    torch, lightning, transformers, pandas, pyarrow, dvc, litserve.

Run with the Python that has modelbuild installed:
    .venv/bin/python benchmarks/hashing.py                 # 2 GiB file
    .venv/bin/python benchmarks/hashing.py --size-mb 256   # quick
Always exits 0 after printing the tables (2 if modelbuild cannot be imported); a missed target is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "lightning", "transformers", "pandas", "pyarrow", "dvc", "litserve")
RECIPE = """\
name: tiny
steps:
  hello:
    builder: command
    params: {cmd: 'echo hello > $MB_OUT/hello.txt'}
"""
PROBE = """\
import contextlib, io, json, sys
from modelbuild.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(sys.argv[2:])
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"rc": rc, "heavy": heavy, "modules": len(sys.modules)}))
"""


def median_time(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_file(path: Path, mb: int, write_kb: int) -> None:
    """Random bytes, written `write_kb` at a time. The write size matters: on Linux it sets the page-cache
    folio size, and mmap hashing runs ~3x faster over the large folios of 64 MiB writes than over the
    small ones of 8 KiB writes (`head -c`, streaming downloads). 1 MiB (dd bs=1M) is the default."""
    block, chunk, off = memoryview(os.urandom(64 << 20)), write_kb << 10, 0
    with open(path, "wb") as f:
        while off < mb << 20:
            start = off % len(block)
            off += f.write(block[start:start + min(chunk, (mb << 20) - off)])
    with open(path, "rb") as f:  # read once so that every hasher below reads from the page cache
        hashlib.file_digest(f, lambda: _Null())


class _Null:
    def update(self, _):
        pass


def bench_hash(path: Path, size: int, repeat: int) -> list[tuple[str, float]]:
    from modelbuild.hashing import hash_file

    def stdlib(name):
        def go():
            with open(path, "rb") as f:
                hashlib.file_digest(f, name)
        return go
    hashers = [("modelbuild hash_file (xxh3-128, mmap)", lambda: hash_file(path)),
               ("hashlib.md5 (DVC)", stdlib("md5")), ("hashlib.sha256", stdlib("sha256"))]
    return [(label, size / median_time(fn, repeat) / 1e9) for label, fn in hashers]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=2048, help="file size for (a), MiB (default 2048)")
    ap.add_argument("--write-kb", type=int, default=1024, help="write size when making the file (default 1024)")
    ap.add_argument("--repeat", type=int, default=3, help="hash runs per hasher (median)")
    ap.add_argument("--runs", type=int, default=20, help="CLI runs for (b) (median)")
    ap.add_argument("--modelbuild", help="modelbuild executable (default: beside this Python, else on PATH)")
    args = ap.parse_args()
    try:
        import modelbuild.hashing  # noqa: F401
    except ImportError as e:
        print(f"cannot import modelbuild ({e}); run this with the Python that has it installed, e.g.\n"
              "    .venv/bin/python benchmarks/hashing.py", file=sys.stderr)
        return 2
    beside = Path(sys.executable).parent / "modelbuild"
    mb = args.modelbuild or (str(beside) if beside.exists() else shutil.which("modelbuild") or "modelbuild")

    with tempfile.TemporaryDirectory(prefix="mb-hashing-") as tmp:
        tmp = Path(tmp)
        # (a) hash throughput
        print(f"(a) writing a {args.size_mb} MiB file ...", flush=True)
        big, size = tmp / "big.bin", args.size_mb << 20
        make_file(big, args.size_mb, args.write_kb)
        rates = bench_hash(big, size, args.repeat)
        big.unlink()

        # (b) CLI start-up
        print(f"(b) timing `modelbuild show` x{args.runs} ...", flush=True)
        (tmp / "tiny.yaml").write_text(RECIPE)
        store = str(tmp / "store")
        subprocess.run([mb, "--store", store, "build", str(tmp / "tiny.yaml")], check=True, capture_output=True)

        def quiet(cmd):
            return lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        show = [mb, "--store", store, "show", "tiny:hello"]
        startup = [("python -c pass (floor)", median_time(quiet([sys.executable, "-c", "pass"]), args.runs)),
                   ("python -c 'import modelbuild.cli'",
                    median_time(quiet([sys.executable, "-c", "import modelbuild.cli"]), args.runs)),
                   ("modelbuild show tiny:hello", median_time(quiet(show), args.runs))]

        # (c) heavy imports of the lineage verbs
        verbs = [["show", "tiny:hello"], ["path", "tiny:hello"], ["log", "tiny:hello"], ["verify"],
                 ["graph", str(tmp / "tiny.yaml")], ["diff", "tiny:hello", "tiny:hello"]]
        probes = []
        for v in verbs:
            p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), "--store", store, *v],
                               capture_output=True, text=True)
            res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"rc": "crash", "heavy": ["?"]}
            probes.append((" ".join(["modelbuild", *v[:1]]), res))

    md5 = dict(rates)["hashlib.md5 (DVC)"]
    print(f"\n(a) hash throughput, {args.size_mb} MiB file in the page cache (written {args.write_kb} KiB at a time), "
          f"median of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'hasher':<40} {'GB/s':>7} {'vs md5':>7}")
    for label, r in rates:
        print(f"{label:<40} {r:7.2f} {r / md5:6.1f}x")
    ours = rates[0][1]
    print(f"target: hash_file >= 5 GB/s: {'ok' if ours >= 5 else 'MISSED'} ({ours:.2f} GB/s)")

    floor = startup[0][1]
    print(f"\n(b) CLI start-up, median of {args.runs} runs")
    print(f"{'command':<40} {'ms':>7} {'over floor':>11}")
    for label, t in startup:
        print(f"{label:<40} {t * 1e3:7.1f} {(t - floor) * 1e3:9.1f}ms")
    t_show = startup[-1][1]
    print(f"target: modelbuild show < 150 ms: {'ok' if t_show < 0.150 else 'MISSED'} ({t_show * 1e3:.0f} ms)")

    print(f"\n(c) heavy imports ({', '.join(HEAVY)}) by lineage verbs")
    for label, res in probes:
        ok = not res["heavy"] and res["rc"] == 0
        verdict = f"none ({res['modules']} modules loaded)" if ok else f"rc={res['rc']} IMPORTS {res['heavy']}"
        print(f"{label:<40} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
