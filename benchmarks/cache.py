"""The shared cache against DVC: push, no-op push and pull of the same files to the same kinds of remote.

Two artifact sets, each to two remotes, both tools in one run:
  income   the artifacts of recipes/income.yaml (a store where it is built: --income-store; else it is built)
  big      one artifact of --size-mb MiB of random bytes (a one-step `command` recipe)
  dir      a directory remote;  s3   moto's S3 server on 127.0.0.1 (a free port), via dvc-s3 for both tools

modelbuild: `push RECIPE --to URL` (signs, files first, manifests last), the same again (no-op: everything is
there), then `pull RECIPE` into an empty store B (fetch, verify every digest and the signature, commit).
DVC: the same files copied into a DVC workspace and `dvc add`ed (untimed), then `dvc push`, `dvc push`
again (no-op), and after deleting the workspace copies and .dvc/cache, `dvc pull`. Every time is the wall
time of the whole CLI process. Targets: pull >= 1.0x DVC's throughput (DVC pull s / modelbuild pull s), no-op
push <= 0.2x DVC's time.

Run (about 5 minutes with 1 GiB, most of it moto):
    python benchmarks/cache.py --income-store store          # income built in ./store
    python benchmarks/cache.py --size-mb 64 --remotes dir     # quick
Prints a Markdown table; exits 0 (a missed target is reported, not fatal), 2 if a tool is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
BIG = """name: big
steps:
  blob:
    builder: command
    params: {cmd: 'head -c %dM /dev/urandom > "$MB_OUT/blob.bin"'}
"""


class Failed(Exception):
    pass


def timed(cmd: list, cwd: Path, env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}",
              file=sys.stderr)
        raise Failed(f"{Path(str(cmd[0])).name} exited {proc.returncode}")
    return seconds, proc.stdout


class Tools:
    def __init__(self, args):
        self.mb = [sys.executable, "-m", "modelbuild"]
        self.dvc = args.dvc
        self.env = {"PYTHONPATH": str(REPO), "MODELBUILD_SANDBOX": "off"}
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # both tools run from compiled bytecode, as installed
        os.environ["DVC_NO_ANALYTICS"] = "1"  # nothing leaves the machine

    def modelbuild(self, *args, store, cwd=REPO, env=None):
        return timed([*self.mb, "--store", store, *args], cwd, {**self.env, **(env or {})})


def dvc_workspace(work: Path, name: str, folders: list[Path], tools: Tools, remote_url: str, options: dict) -> Path:
    """A DVC repo whose one tracked folder holds copies of the artifacts' files (as a DVC user would keep them)."""
    repo = work / f"dvc-{name}"
    repo.mkdir()
    timed([tools.dvc, "init", "--no-scm", "-q"], repo)
    data = repo / "data"
    for folder in folders:
        shutil.copytree(folder, data / folder.name, ignore=shutil.ignore_patterns(".meta.json"), symlinks=True)
    subprocess.run(["chmod", "-R", "u+w", str(data)], check=True)
    timed([tools.dvc, "remote", "add", "-d", "bench", remote_url], repo)
    for key, value in options.items():
        timed([tools.dvc, "remote", "modify", "bench", key, value], repo)
    timed([tools.dvc, "add", "-q", "data"], repo)
    return repo


def run_dvc(repo: Path, tools: Tools, env: dict) -> dict:
    push, _ = timed([tools.dvc, "push", "-q"], repo, env)
    noop, _ = timed([tools.dvc, "push", "-q"], repo, env)
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    pull, _ = timed([tools.dvc, "pull", "-q"], repo, env)
    return {"push": push, "noop": noop, "pull": pull}


def run_modelbuild(store: Path, recipe: Path, targets: list, url: str, work: Path, tools: Tools, env: dict,
                   cwd: Path) -> dict:
    push, out = tools.modelbuild("push", recipe, *targets, "--to", url, "--secret-key-file", tools.secret, "--json",
                                 store=store, cwd=cwd, env=env)
    folders = [Path(p["path"]) for p in json.loads(out)["pushed"]]
    noop, _ = tools.modelbuild("push", recipe, *targets, "--to", url, "--secret-key-file", tools.secret,
                               store=store, cwd=cwd, env=env)
    empty = Path(tempfile.mkdtemp(prefix="storeB-", dir=work))
    pull, out = tools.modelbuild("pull", recipe, *targets, "--json", "--substituter", url, "--trusted-public-key",
                                 tools.public, store=empty, cwd=cwd, env=env)
    statuses = {s["status"] for s in json.loads(out)["steps"]}
    assert statuses == {"substituted"}, statuses
    shutil.rmtree(empty, ignore_errors=True)
    subprocess.run(["chmod", "-R", "u+w", str(empty)], capture_output=True)
    return {"push": push, "noop": noop, "pull": pull, "folders": folders}


@contextlib.contextmanager
def moto_s3():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def size_of(folders: list[Path]) -> int:
    return sum(f.stat().st_size for folder in folders for f in folder.rglob("*")
               if f.is_file() and not f.is_symlink() and f.name != ".meta.json")


def quiet_moto() -> None:
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--income-store", type=Path, help="a store where recipes/income.yaml is built (kept up to date)")
    p.add_argument("--no-income", action="store_true", help="only the big artifact")
    p.add_argument("--income-target", action="append", default=None, help="push and pull only these steps of "
                   "the income recipe and what they need (default: all; the tuning steps train for many minutes)")
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--remotes", default="dir,s3")
    p.add_argument("--dvc", default=shutil.which("dvc") or str(Path(sys.executable).with_name("dvc")))
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one, removed after)")
    args = p.parse_args()
    if not Path(args.dvc).exists():
        print(f"dvc not found ({args.dvc}): install dvc and dvc-s3", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="mb-cache-bench-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    tools = Tools(args)
    tools.secret = work / "bench.secret"
    _, out = tools.modelbuild("key", "generate", "bench-1", "-o", tools.secret, store=work / "unused")
    tools.public = out.strip()

    sets = {}
    income_store = (args.income_store or work / "income-store").absolute()
    targets = [a for t in args.income_target or [] for a in ("-t", t)]
    if not args.no_income:  # untimed; a store built by older code rebuilds what changed
        print("building recipes/income.yaml ...", file=sys.stderr)
        tools.modelbuild("build", "recipes/income.yaml", *targets, store=income_store)
    if not args.no_income:
        sets["income"] = (income_store, REPO / "recipes" / "income.yaml", targets, REPO)
    big_dir = work / "big-project"
    big_dir.mkdir()
    (big_dir / "recipe.yaml").write_text(BIG % args.size_mb)
    tools.modelbuild("build", "recipe.yaml", store=work / "big-store", cwd=big_dir)
    sets[f"{args.size_mb} MiB"] = (work / "big-store", big_dir / "recipe.yaml", [], big_dir)

    rows = []
    with contextlib.ExitStack() as stack:
        quiet_moto()
        endpoint = stack.enter_context(moto_s3()) if "s3" in args.remotes else None
        if endpoint:
            import boto3
            os.environ.update(S3_ENV)
            s3 = boto3.client("s3", endpoint_url=endpoint)
            for bucket in ("modelbuild-bench", "dvc-bench"):
                s3.create_bucket(Bucket=bucket)
        for n, (name, (store, recipe, steps, cwd)) in enumerate(sets.items()):
            for remote in args.remotes.split(","):
                tag = f"{n}-{remote}"
                if remote == "dir":
                    mb_url, dvc_url, options, env = str(work / f"mb-remote-{tag}"), str(work / f"dvc-remote-{tag}"), {}, {}
                else:  # long read timeouts for both: moto assembles a 1 GiB multipart upload slowly, and a
                    # client that gives up and retries meets a moto bug (the upload is already complete)
                    mb_url = f"s3://modelbuild-bench/{tag}?endpointurl={endpoint}&read_timeout=900"
                    dvc_url, options, env = f"s3://dvc-bench/{tag}", {"endpointurl": endpoint,
                                                                      "read_timeout": "900"}, S3_ENV
                print(f"{name} / {remote}: modelbuild ...", file=sys.stderr)
                try:
                    mb = run_modelbuild(store, recipe, steps, mb_url, work, tools, env, cwd)
                except Failed as e:
                    rows.append((name, remote, 0, 0, str(e), None))
                    continue
                folders = mb.pop("folders")
                size = size_of(folders)
                print(f"{name} / {remote}: dvc ...", file=sys.stderr)
                try:
                    dvc = run_dvc(dvc_workspace(work, tag, folders, tools, dvc_url, options), tools, env)
                except Failed as e:
                    dvc = str(e)
                rows.append((name, remote, size, len(folders), mb, dvc))
                print(f"{name} / {remote}: {size / 1e6:.1f} MB, modelbuild {mb}, dvc {dvc}", file=sys.stderr,
                      flush=True)
    if args.work is None:
        subprocess.run(["chmod", "-R", "u+w", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    return 0


def print_table(rows) -> None:
    print("| artifacts | remote | MB | push s (modelbuild / DVC) | no-op push s (modelbuild / DVC) | ratio (target <= 0.2) "
          "| pull s (modelbuild / DVC) | pull MB/s (modelbuild / DVC) | throughput ratio (target >= 1.0) |")
    print("|---|---|---:|---|---|---:|---|---|---:|")
    for name, remote, size, count, mb, dvc in rows:
        mbytes = size / 1e6
        if isinstance(mb, str) or isinstance(dvc, str):
            print(f"| {name} ({count} artifacts) | {remote} | {mbytes:.1f} | modelbuild: {mb if isinstance(mb, str) else 'ok'}; "
                  f"DVC: {dvc if isinstance(dvc, str) else 'ok'} | | | | | |")
            continue
        print(f"| {name} ({count} artifacts) | {remote} | {mbytes:.1f} | {mb['push']:.2f} / {dvc['push']:.2f} | "
              f"{mb['noop']:.2f} / {dvc['noop']:.2f} | {mb['noop'] / dvc['noop']:.2f} | "
              f"{mb['pull']:.2f} / {dvc['pull']:.2f} | {mbytes / mb['pull']:.0f} / {mbytes / dvc['pull']:.0f} | "
              f"{dvc['pull'] / mb['pull']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
