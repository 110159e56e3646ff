"""The `modelbuild` command line: parses arguments, calls the verb's module, prints.

Lineage verbs (show, diff, why-depends, graph, log, path, gc, verify, tag, promote) import no ML library;
`build` and `plan` load only the builders a recipe names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from . import errors
from .errors import ModelbuildError, UsageError


def _store(args):
    from .store import Store
    return Store(args.store)


def _overrides(args) -> list[str]:
    overrides = list(args.overrides)
    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise UsageError(f"'{bad[0]}' is not an override: write KEY=VALUE, e.g. steps.train.params.lr=3e-4 "
                         "(to build some steps only, use --target STEP)")
    return overrides


def _recipe_and_overrides(args):
    from .recipe import load_recipe
    recipe = load_recipe(args.recipe, _overrides(args))
    for t in args.target or []:
        if t not in recipe.steps:
            raise UsageError(f"--target {t}: the recipe {args.recipe} has no step '{t}'"
                             f"{errors.did_you_mean(t, recipe.steps)}; its steps are {', '.join(recipe.order)}")
    return recipe


def _sandbox(args) -> None:
    """`--sandbox` reaches the command and python builders (and their workers) through the environment."""
    if getattr(args, "sandbox", None):
        os.environ["MODELBUILD_SANDBOX"] = args.sandbox


def cmd_build(args) -> int:
    from .progress import reporter_for
    from .realise import Realiser, exit_code
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"-j/--jobs must be at least 1, got {args.jobs}")
    _sandbox(args)
    recipe = _recipe_and_overrides(args)
    store = _store(args)
    substituter = _substituter(args, store)
    executor = _executor(args, store)
    reporter = reporter_for(args.json)
    realiser = Realiser(store, recipe, jobs=args.jobs or 1, keep_going=args.keep_going, check=args.check,
                        reporter=reporter, substituter=substituter,
                        require_cached=args.require_cached, executor=executor)
    try:
        states = realiser.build(args.target)
    finally:
        if executor is not None:
            executor.close()
        if reporter is not None:
            reporter.close()  # an interrupted build, too, gives the terminal back (cursor shown)
    code = exit_code(states)
    if args.json:
        steps = [s.as_json(store) for s in states]
        for out, st in zip(steps, states, strict=True):
            if "error" in out and st.status == "failed":
                out["error"] = _with_log(out["error"], st.key, store)
        print(json.dumps({"recipe": recipe.name, "store": str(store.root), "exit_code": code,
                          "steps": steps}, indent=2))
        return code
    _print_summary(states, store)
    for st in states:
        if st.status == "failed":
            print(f"error: {_with_log(st.error['message'], st.key, store)}", file=sys.stderr)
        if st.differences:
            print(f"error: step '{st.name}' is not reproducible: rebuilding it gave different content in "
                  f"{', '.join(st.differences[:10])}{' ...' if len(st.differences) > 10 else ''}. Look for "
                  "unseeded randomness, timestamps or unordered iteration in its builder", file=sys.stderr)
    return code


def _with_log(message: str, key: str | None, store) -> str:
    """A failed step's message, with where its build log is (a failed build has no artifact to `log`)."""
    log = store.logs / f"{key}.log" if key else None
    if log is None or not log.is_file() or str(log) in message:
        return message
    return f"{message.rstrip('.')}. Its build log is {log}"


def _print_summary(states, store) -> None:
    width = max(len(s.name) for s in states)
    for st in states:
        where = store.rel(st.path) if st.path and st.status in ("built", "cached", "substituted") else ""
        print(f"{st.name:<{width}}  {st.status:<11}  {st.seconds:6.1f}s  {where}")


def _substituter(args, store):
    """The shared caches this build may take artifacts from (modelbuild/cache), or None."""
    if args.no_substitute:
        if args.require_cached:
            raise UsageError("--require-cached needs a cache to take artifacts from: drop --no-substitute")
        return None
    from .cache.config import settings
    conf = settings(substituters=args.substituter, trusted=args.trusted_public_key)
    if not conf.substituters:
        if args.require_cached:
            raise UsageError("--require-cached needs a cache: give --substituter URL, set MODELBUILD_SUBSTITUTERS, "
                             "or add substituters to [tool.modelbuild] in pyproject.toml (docs/cache.md)")
        return None
    from .cache.substitute import Substituter
    return Substituter(store, conf.substituters, conf.trusted_public_keys, conf.project_dir)


def _executor(args, store):
    """Where the jobs run: local worker processes (None: the realiser's default) or a Dask cluster, from
    --executor, else $MODELBUILD_EXECUTOR, else `executor` in the project's config (docs/cluster.md)."""
    from .cache.config import project_config
    conf, where = project_config(Path.cwd().absolute())
    url = getattr(args, "executor", None) or os.environ.get("MODELBUILD_EXECUTOR") or conf.get("executor") or "local"
    if url == "local":
        return None
    mode = getattr(args, "cluster_store", None) or os.environ.get("MODELBUILD_CLUSTER_STORE") or conf.get(
        "cluster-store") or "shared"
    if mode not in ("shared", "cache"):
        raise UsageError(f"cluster-store '{mode}' (in {where or 'the environment'}): it is 'shared' (every worker "
                         "mounts the store at the same path) or 'cache' (workers build into stores of their own and "
                         "share artifacts through the shared cache); docs/cluster.md")
    try:
        from .executors_dask import DaskExecutor
    except ModuleNotFoundError as e:
        raise UsageError(f"--executor {url} needs Dask's distributed, which is not installed ({e.name}): "
                         "pip install 'modelbuild[cluster]'") from None
    cache = None
    if mode == "cache":
        from .cache.config import settings
        cache = settings(substituters=args.substituter, trusted=args.trusted_public_key)
    import tempfile
    worker_store = (os.environ.get("MODELBUILD_WORKER_STORE_TEMPLATE") or conf.get("worker-store")
                    or str(Path(tempfile.gettempdir()) / "modelbuild-worker-stores" / "{worker}"))
    return DaskExecutor(store, url, slots=args.jobs, mode=mode, worker_store=worker_store, cache=cache)


def cmd_pull(args) -> int:
    """`pull RECIPE`: every step from the caches, nothing built (exit 8 for a step no cache has)."""
    args.require_cached, args.no_substitute, args.jobs, args.keep_going, args.check = True, False, 1, True, False
    args.executor = "local"  # builds nothing: no cluster needed
    return cmd_build(args)


def cmd_push(args) -> int:
    from .cache.config import settings
    from .cache.push import closure, push, targets
    from .cache.remote import Remote, Unreachable
    conf = settings(push_to=args.to, secret_key_file=args.secret_key_file)
    if not conf.push_to:
        raise UsageError("push needs a cache to push to: give --to URL (a folder, s3://..., remote://NAME), or set "
                         "MODELBUILD_PUSH_TO or push-to in [tool.modelbuild] (docs/cache.md)")
    if not conf.secret_key_file:
        raise UsageError("push signs what it publishes: give --secret-key-file FILE or set MODELBUILD_SECRET_KEY_FILE "
                         "(make a key with `modelbuild key generate NAME`)")
    secret = _read_secret(conf.secret_key_file)
    store = _store(args)
    items = closure(store, targets(store, args.what, lambda recipe: _built_steps(args, recipe, store)))
    remote = Remote(conf.push_to, conf.project_dir)
    try:
        report = push(store, remote, secret, conf.secret_key_file, items)
    except (Unreachable, FileNotFoundError) as e:  # a dead endpoint, a missing bucket
        raise errors.StoreUnavailable(f"the cache {conf.push_to} cannot be reached ({e}): nothing was published; "
                                      "check the URL and credentials and push again") from None
    if args.json:
        print(json.dumps({"to": conf.push_to, "pushed": [{"key": k, "path": str(p)} for k, p in report.pushed],
                          "present": [{"key": k, "path": str(p)} for k, p in report.present],
                          "files": report.files, "bytes": report.bytes}, indent=2))
        return 0
    for key, path in report.pushed:
        print(f"pushed   {store.rel(path)}  (key {key})")
    print(f"pushed {len(report.pushed)} artifacts ({report.files} files, {report.bytes / 1e6:.1f} MB) to "
          f"{conf.push_to}; {len(report.present)} were already there")
    return 0


def _read_secret(path: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"the secret key file {path} cannot be read ({getattr(e, 'strerror', None) or e}): make one "
                         "with `modelbuild key generate NAME`") from None


def _built_steps(args, recipe_file: str, store) -> list:
    """A recipe's steps as last built in this store (their roots: what `build` just made or found), so a push
    needs no planning; the steps never built here are named."""
    name, steps = _names(args, recipe_file)
    for t in args.target or []:
        if t not in steps:
            raise UsageError(f"--target {t}: the recipe {recipe_file} has no step '{t}'"
                             f"{errors.did_you_mean(t, steps)}; its steps are {', '.join(steps)}")
    roots = {step: store.get_root(f"{name}:{step}") if store.exists() else None for step in args.target or steps}
    missing = [step for step, root in roots.items() if not (root and root[1])]
    if missing:
        print(f"note: not pushed, never built in this store: {', '.join(missing)} (build {recipe_file} first)",
              file=sys.stderr)
    return [(root[0], root[1]) for root in roots.values() if root and root[1]]  # push adds what they need


def _names(args, recipe_file: str) -> tuple[str, list[str]]:
    """The recipe's name and steps. A plain recipe (no Hydra defaults, no overrides) is only parsed, not
    composed: composing is most of a no-op push's time."""
    from .recipe import _parse, _read_text, load_recipe
    data = _parse(_read_text(Path(recipe_file)), recipe_file)
    if (not args.overrides and isinstance(data, dict) and "defaults" not in data and isinstance(data.get("name"), str)
            and "${" not in data["name"] and isinstance(data.get("steps"), dict)):
        return data["name"], [str(s) for s in data["steps"]]
    recipe = load_recipe(recipe_file, _overrides(args))
    return recipe.name, list(recipe.order)


def cmd_key(args) -> int:
    from .cache.manifest import generate_key, public_of
    if args.action == "public":
        print(public_of(_read_secret(args.name), args.name))
        return 0
    secret, public = generate_key(args.name)
    target = Path(args.output or f"{args.name}.secret")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{target} exists: modelbuild does not overwrite a secret key. Choose another name or "
                         "-o FILE") from None
    except OSError as e:
        raise UsageError(f"cannot write the secret key to {target}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    print(public)
    print(f"wrote the secret key to {target} (mode 0600): keep it secret; give the line above to "
          "trusted-public-keys", file=sys.stderr)
    return 0


def cmd_plan(args) -> int:
    from .realise import Realiser
    _sandbox(args)
    recipe = _recipe_and_overrides(args)
    states = Realiser(_store(args), recipe).plan(args.target)
    if args.json:
        print(json.dumps({"recipe": recipe.name, "steps": [
            {"step": s.name, "action": s.status, "key": s.key, "reasons": s.reasons} for s in states]}, indent=2))
        return 0
    width = max(len(s.name) for s in states)
    for st in states:
        print(f"{st.name:<{width}}  {st.status:<6}  {'; '.join(st.reasons)}".rstrip())
    return 0


def cmd_show(args) -> int:
    from .lineage import format_show, show
    store = _store(args)
    info = show(store, store.resolve(args.artifact))
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_show(info))
    return errors.CORRUPT if info["damaged"] else 0


def cmd_diff(args) -> int:
    from .lineage import diff, format_diff
    store = _store(args)
    (a, key_a), (b, key_b) = store.resolve_with_key(args.a), store.resolve_with_key(args.b)
    d = diff(store, a, b, key_a, key_b)
    print(json.dumps(d.as_json(), indent=2) if args.json else format_diff(d, args.a, args.b))
    return 0


def cmd_why_depends(args) -> int:
    from .lineage import why_depends
    store = _store(args)
    a, b = store.resolve(args.a), store.resolve(args.b)
    chain = why_depends(store, a, b)
    if chain is None:
        print(f"{args.a} does not depend on {args.b}")
        return 1
    print("\n".join(("  " * i + ("└── " if i else "")) + c for i, c in enumerate(chain)))
    return 0


def cmd_graph(args) -> int:
    from . import graph
    if args.what.endswith((".yaml", ".yml")) or Path(args.what).is_file():
        from .recipe import load_recipe
        recipe = load_recipe(args.what, _overrides(args))
        nodes, edges = graph.recipe_edges(recipe)
        title = recipe.name
    else:
        store = _store(args)
        nodes, edges = graph.artifact_edges(store, store.resolve(args.what))
        title = args.what
    print(graph.to_dot(nodes, edges, title) if args.format == "dot" else graph.to_mermaid(nodes, edges, title))
    return 0


def cmd_report(args) -> int:
    from .report import facts_of, render
    store = _store(args)
    if not store.exists():
        raise UsageError(f"there is no store at {store.root}: build the recipe first, or point --store / "
                         "MODELBUILD_STORE at the store it was built in")
    facts = facts_of(store, args.what, _overrides(args))
    if args.model_card:
        from .report.card import model_card
        text = model_card(store, facts)
    else:
        text = render(store, facts, args.against)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        _write_atomically(Path(args.output), text)
        print(f"wrote {args.output} ({len(text.encode()) / 1e3:.0f} kB)", file=sys.stderr)
    return 0


def _write_atomically(target: Path, text: str) -> None:
    """Write beside the target and rename, so a reader never sees half a report."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {target}: {e.strerror}; choose another -o FILE") from None


def cmd_log(args) -> int:
    store = _store(args)
    attempt = store.last_attempt(args.artifact) if store.exists() else None
    if attempt:  # RECIPE:STEP: its last build, failed or not
        log = store.log_path(attempt[0], f"the last build of {args.artifact} in the trace")
        if log.is_file():
            sys.stdout.write(log.read_text(errors="replace"))
            return 0
    log = store.log_of(store.resolve(args.artifact))
    if log is None or not log.is_file():
        raise UsageError(f"no build log kept for {args.artifact} (sources have none, and gc removes the logs of "
                         "removed artifacts)")
    sys.stdout.write(log.read_text(errors="replace"))
    return 0


def cmd_path(args) -> int:
    store = _store(args)
    for name in args.artifacts:
        print(store.resolve(name))
    return 0


def cmd_gc(args) -> int:
    from .gc import collect
    store = _store(args)
    if not store.exists():
        print("nothing to collect: the store is empty")
        return 0
    if not args.dry_run:
        store.require_writable()
    with store.gc_lock(exclusive=True):
        report = collect(store, dry_run=args.dry_run, forget_tag_history=args.forget_tag_history)
    verb = "would remove" if args.dry_run else "removed"
    for p in report.removed:
        print(f"{verb} {store.rel(p)}")
    for p in report.work_areas:
        print(f"{verb} {store.rel(p)} ({report.work_area_notes[p]})")
    n = len(report.work_areas)
    areas = f" and {n} work area{'s' if n != 1 else ''}" if n else ""
    print(f"{verb} {len(report.removed)} artifacts{areas} ({report.bytes_freed / 1e6:.1f} MB), kept "
          f"{len(report.kept)} rooted or reachable from a root")
    return 0


def cmd_verify(args) -> int:
    from .gc import repair, verify
    store = _store(args)
    if not store.exists() and not store.objects.is_dir():
        raise UsageError(f"there is no store at {store.root}")
    if args.repair:
        if args.artifacts:
            raise UsageError("verify --repair works on the whole store: give no ARTIFACT")
        store.require_writable()
        with store.gc_lock(exclusive=True):
            done = repair(store)
        print("\n".join(done) if done else "nothing to repair")
    paths = [store.resolve(a) for a in args.artifacts] if args.artifacts else None
    problems = verify(store, paths)
    if all(status == "UNRECORDED" for status, _, _ in problems):
        for _, what, _ in problems:
            print(f"note: {what} is not in the trace (left by a build killed as it committed, or by a lost "
                  "trace): `modelbuild gc` removes it, `modelbuild verify --repair` records it")
        count = len(paths) if paths is not None else len(store.artifacts())
        print(f"ok: {count} artifacts match their digests; derivations, lineage records and roots are sound")
        return 0
    for status, what, details in problems:
        print(f"{status} {what}: {', '.join(details[:10])}", file=sys.stderr)
    print(f"error: {len(problems)} problems in the store {store.root}: {_verify_advice(problems)}", file=sys.stderr)
    return errors.CORRUPT


def _verify_advice(problems) -> str:
    """What to do about what verify found, worst first."""
    damaged = sum(status == "CORRUPT" and what.startswith("objects/") for status, what, _ in problems)
    advice = [f"the next build moves the {damaged} damaged artifacts aside and rebuilds them"] if damaged else []
    if any(status != "MISSING" or what == "trace.sqlite" for status, what, _ in problems):
        advice.append("`modelbuild verify --repair` quarantines damaged artifacts and rebuilds the trace from the "
                      "artifacts' lineage records")
    if any(status == "MISSING" and what != "trace.sqlite" for status, what, _ in problems):
        advice.append("building their recipes again brings the missing artifacts back")
    return "; ".join(advice)


def cmd_tag(args) -> int:
    from .store import safe_name
    store = _store(args)
    safe_name(args.name, "tag name")  # first: a tag name becomes a file name under roots/tag/
    if args.history:
        if args.artifact or args.delete:
            raise UsageError(f"tag --history takes only the tag's NAME: `modelbuild tag --history {args.name}`")
        return _print_history(store, args.name, args.json)
    if args.delete:
        if args.artifact:
            raise UsageError(f"tag --delete takes only the tag's NAME, not {args.artifact!r}")
        if not store.exists() or not store.delete_tag(args.name, reason=args.reason):
            raise UsageError(f"there is no tag '{args.name}'; `modelbuild roots` lists the tags")
        print(f"deleted tag {args.name}")
        return 0
    if not args.artifact:
        raise UsageError("tag needs NAME and ARTIFACT, e.g. `modelbuild tag prod income:model`")
    path, key = store.resolve_with_key(args.artifact)
    store.require_writable()
    old = store.set_tag(args.name, path, key, reason=args.reason)
    print(f"{args.name} -> {store.rel(path)}" + (f" (was {old})" if old and old != store.rel(path) else ""))
    return 0


def _print_history(store, tag: str, as_json: bool) -> int:
    from .store import format_time
    moves = store.tag_history(tag) if store.exists() else []
    if not moves and not (store.exists() and store.get_root(f"tag:{tag}")):
        raise UsageError(f"the tag '{tag}' has no history in the store {store.root}; `modelbuild roots` lists "
                         "the tags")
    if as_json:
        print(json.dumps(moves, indent=2))
        return 0
    for i, m in enumerate(reversed(moves)):
        where = m["new"] if m["new"] else "(deleted)"
        print(f"{tag}~{i:<3} {format_time(m['time'])}  {m['action']:<7}  {m['user']:<10}  {where}"
              + (f"  (was {m['old']})" if m["old"] else "") + (f"  {m['reason']}" if m["reason"] else ""))
    if not moves:
        print(f"{tag} was set before modelbuild kept tag history: only its present is known")
    return 0


def cmd_promote(args) -> int:
    from .monitoring.promote import promote
    from .store import safe_name
    store = _store(args)
    safe_name(args.tag, "tag name")
    path, key = store.resolve_with_key(args.artifact)
    store.require_writable()
    old, evaluations = promote(store, args.tag, path, key, args.reason)
    judged = ", ".join(f"{e.step} ({store.rel(e.path)})" for e in evaluations)
    print(f"promoted {args.tag} -> {store.rel(path)}" + (f" (was {old})" if old else "") + f": passed {judged}")
    return 0


def cmd_runs(args) -> int:
    from .runs import show
    split = lambda text: text.split(",") if text is not None else None  # noqa: E731
    print(show(_store(args), args.recipe, step=args.step, sort=args.sort, reverse=args.reverse,
               params=split(args.params), metrics=split(args.metrics), as_json=args.json))
    return 0


def cmd_roots(args) -> int:
    store = _store(args)
    roots = store.roots() if store.exists() else []
    if args.json:
        print(json.dumps([{"name": n, "path": str(p), "key": k} for n, p, k in roots], indent=2))
        return 0
    width = max((len(n) for n, _, _ in roots), default=0)
    for name, path, _ in roots:
        print(f"{name:<{width}}  {store.rel(path)}{'' if path.exists() else '  (missing)'}")
    return 0


def cmd_serve(args) -> int:
    from .serving.artifact import find
    from .store import default_store_root
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535 (0: any free port), got {args.port}")
    if args.max_batch_size < 1 or args.batch_timeout < 0 or args.max_body_bytes < 1:
        raise UsageError("--max-batch-size and --max-body-bytes must be at least 1, --batch-timeout at least 0")
    model = find(args.artifact, Path(args.store or default_store_root()))
    from .serving.server import Options, serve
    opts = Options(host=args.host, port=args.port, api_key=args.api_key or os.environ.get("MODELBUILD_API_KEY"),
                   max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout,
                   max_body_bytes=args.max_body_bytes, log_dir=Path(args.log_dir), threads=args.threads)
    return serve(model, opts)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one `error:` paragraph that says how to get help."""

    def error(self, message):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += errors.did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        self.exit(errors.USAGE, f"error: {self.prog}: {message}. See `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="modelbuild", description="Reproducible, content-addressed builds of ML models. Exit "
                "codes: 0 ok, 1 build failed, 2 usage or recipe error, 3 data invalid, 4 gate failed, 5 corrupt "
                "store or hash mismatch, 6 not reproducible, 7 store unavailable (no space, read-only, no "
                "permission, not a store directory), 8 not cached (--require-cached, pull), 130 interrupted.")
    p.add_argument("--store", help="store directory (default: $MODELBUILD_STORE or ./store)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def recipe_verb(name, fn, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("recipe", help="recipe YAML file")
        sp.add_argument("overrides", nargs="*", default=[], help="Hydra overrides, e.g. steps.train.params.lr=3e-4")
        sp.add_argument("-t", "--target", action="append", help="build only this step and what it needs")
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        sp.set_defaults(fn=fn)
        return sp

    b = recipe_verb("build", cmd_build, "build a recipe into the store")
    b.add_argument("-j", "--jobs", type=int, default=None, help="steps to build in parallel (default 1; on a Dask "
                   "cluster, one per worker thread)")
    b.add_argument("--executor", metavar="URL", help="where jobs run: local (worker processes here, the default) or "
                   "dask://HOST:PORT, a Dask scheduler (default: $MODELBUILD_EXECUTOR or `executor` in the project "
                   "config; docs/cluster.md)")
    b.add_argument("--cluster-store", choices=("shared", "cache"), help="how cluster workers reach the store: "
                   "shared (the same path on every worker, the default) or cache (stores of their own, artifacts "
                   "exchanged through the shared cache)")
    b.add_argument("-k", "--keep-going", action="store_true", help="after a failure, build what does not depend on it")
    b.add_argument("--check", action="store_true", help="rebuild cached steps and compare (reproducibility)")
    b.add_argument("--no-substitute", action="store_true", help="take nothing from shared caches: build it here")
    b.add_argument("--require-cached", action="store_true", help="build nothing: a step that no cache has fails "
                   "(exit 8), the CI check that a merge built nothing new")
    pu = recipe_verb("pull", cmd_pull, "fetch a recipe's artifacts from the shared caches, building nothing "
                     "(exit 8 for a step that no cache has)")
    for sp in (b, pu):
        sp.add_argument("--substituter", action="append", metavar="URL", help="a shared cache to take artifacts "
                        "from (repeatable; replaces $MODELBUILD_SUBSTITUTERS and the project's substituters): a "
                        "folder, s3://bucket/prefix[?endpointurl=...], remote://DVC_REMOTE")
        sp.add_argument("--trusted-public-key", action="append", metavar="KEY", help="NAME:BASE64 public key whose "
                        "signatures are trusted (repeatable; replaces $MODELBUILD_TRUSTED_PUBLIC_KEYS)")
    pl = recipe_verb("plan", cmd_plan, "what a build would do, and why (dry run)")
    for sp in (b, pl):
        sp.add_argument("--sandbox", choices=("auto", "required", "off"), default=None,
                        help="run command and python steps in a sandbox: auto (where available, else a "
                             "warning), required (fail where unavailable), off (default: "
                             "$MODELBUILD_SANDBOX or auto)")

    def artifact_verb(name, fn, help_, *positional):
        sp = sub.add_parser(name, help=help_)
        for arg in positional:
            sp.add_argument(arg, help="artifact: store path, digest prefix, RECIPE:STEP, tag, or a tag's past: "
                                      "TAG@2026-12-01 (as it stood then, UTC) or TAG~1 (one move ago)")
        sp.set_defaults(fn=fn)
        return sp

    artifact_verb("show", cmd_show, "an artifact's derivation and lineage", "artifact").add_argument(
        "--json", action="store_true")
    artifact_verb("diff", cmd_diff, "why two artifacts differ, recursively through their inputs", "a", "b").add_argument(
        "--json", action="store_true")
    artifact_verb("why-depends", cmd_why_depends, "how artifact A depends on artifact B", "a", "b")
    artifact_verb("log", cmd_log, "an artifact's build log", "artifact")
    rp = sub.add_parser("report", help="one static HTML page of a recipe's or an artifact's lineage, metrics and "
                        "plots (or, with --model-card, a Hugging Face model card)")
    rp.add_argument("what", metavar="RECIPE|ARTIFACT", help="a recipe YAML (its steps as last built here) or an "
                    "artifact: store path, digest prefix, RECIPE:STEP, tag")
    rp.add_argument("overrides", nargs="*", default=[], help="Hydra overrides of the recipe")
    rp.add_argument("--against", metavar="ARTIFACT|TAG", help="add the changes since this artifact (its `diff`)")
    rp.add_argument("--model-card", action="store_true", help="write a model card (README.md with YAML metadata) "
                    "for the model the artifact is or was evaluated on")
    rp.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: stdout)")
    rp.set_defaults(fn=cmd_report)
    ru = sub.add_parser("runs", help="every build and search trial of a recipe: params, metrics, status, time")
    ru.add_argument("recipe", metavar="RECIPE", help="a recipe YAML, or a recipe's name")
    ru.add_argument("--step", help="only this step's builds (a search's trials are builds of its target)")
    ru.add_argument("--sort", metavar="NAME", help="sort by a metric, param or column (default: started)")
    ru.add_argument("--reverse", action="store_true", help="largest first")
    ru.add_argument("--params", metavar="A,B", help="the params to show (default: those that differ within a step)")
    ru.add_argument("--metrics", metavar="A,B", help="the metrics to show (default: every numeric one)")
    ru.add_argument("--json", action="store_true", help="every row with all its params and metrics")
    ru.set_defaults(fn=cmd_runs)
    pa = sub.add_parser("path", help="store paths of artifacts")
    pa.add_argument("artifacts", nargs="+")
    pa.set_defaults(fn=cmd_path)
    g = sub.add_parser("graph", help="a recipe's or an artifact's graph as DOT or Mermaid")
    g.add_argument("what", help="a recipe YAML or an artifact")
    g.add_argument("overrides", nargs="*", default=[])
    g.add_argument("--format", choices=("dot", "mermaid"), default="dot")
    g.set_defaults(fn=cmd_graph)
    gc = sub.add_parser("gc", help="delete artifacts no root reaches")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    gc.add_argument("--forget-tag-history", action="store_true", help="also remove the artifacts tags named in "
                    "the past (kept by default, so `show TAG@DATE` answers), and drop those moves from history")
    gc.set_defaults(fn=cmd_gc)
    v = sub.add_parser("verify", help="re-hash artifacts, check derivations, lineage and roots; report "
                       "tampering (exit 5)")
    v.add_argument("artifacts", nargs="*")
    v.add_argument("--repair", action="store_true", help="quarantine damaged artifacts and rebuild the trace "
                   "from the artifacts' lineage records and roots/")
    v.set_defaults(fn=cmd_verify)
    t = sub.add_parser("tag", help="name an artifact (a gc root), e.g. the deployed model")
    t.add_argument("name")
    t.add_argument("artifact", nargs="?")
    t.add_argument("--delete", action="store_true")
    t.add_argument("--history", action="store_true", help="every move of the tag, newest first (TAG~0 is now)")
    t.add_argument("--reason", help="why the tag moves (kept in its history)")
    t.add_argument("--json", action="store_true", help="with --history: machine-readable")
    t.set_defaults(fn=cmd_tag)
    ps = sub.add_parser("push", help="publish artifacts and what they need to a shared cache, signed")
    ps.add_argument("what", metavar="RECIPE|ARTIFACT|TAG", help="a recipe (its built steps), an artifact or a tag")
    ps.add_argument("overrides", nargs="*", default=[], help="Hydra overrides of the recipe")
    ps.add_argument("-t", "--target", action="append", help="push only this step of the recipe and what it needs")
    ps.add_argument("--to", metavar="URL", help="the cache: a folder, s3://bucket/prefix, remote://DVC_REMOTE "
                    "(default: $MODELBUILD_PUSH_TO or push-to in the project config)")
    ps.add_argument("--secret-key-file", metavar="FILE", help="the signing key (default: $MODELBUILD_SECRET_KEY_FILE)")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(fn=cmd_push)
    k = sub.add_parser("key", help="signing keys for the shared cache")
    k.add_argument("action", choices=("generate", "public"), help="generate NAME: a new key pair (the secret to "
                   "NAME.secret, mode 0600; the public key printed); public FILE: the public key of a secret key")
    k.add_argument("name", metavar="NAME|FILE")
    k.add_argument("-o", "--output", metavar="FILE", help="where generate writes the secret key")
    k.set_defaults(fn=cmd_key)
    pr = sub.add_parser("promote", help="move a tag to a model whose gated evaluations all passed (exit 4 if not)")
    pr.add_argument("tag")
    pr.add_argument("artifact", help="the model: store path, digest prefix, RECIPE:STEP or tag")
    pr.add_argument("--reason", help="why it is promoted (kept in the tag's history)")
    pr.set_defaults(fn=cmd_promote)
    r = sub.add_parser("roots", help="the gc roots: the last build of every recipe step, and tags")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_roots)
    s = sub.add_parser("serve", help="serve a model artifact over HTTP (LitServe; OpenAI-compatible for language "
                       "models), with /health, /metrics and request logs")
    s.add_argument("artifact", help="RECIPE:STEP, tag, digest prefix, store path, or a folder holding a model "
                   "artifact (an image's /models)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    s.add_argument("--api-key", help="require this key (`Authorization: Bearer KEY` or `X-API-Key`); default "
                   "$MODELBUILD_API_KEY; /health and /metrics stay open")
    s.add_argument("--max-batch-size", type=int, default=8, help="text classifiers: requests answered by one "
                   "model call at most (default 8; 1: no batching)")
    s.add_argument("--batch-timeout", type=float, default=0.005, help="text classifiers: seconds to wait for a "
                   "batch to fill (default 0.005)")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413 "
                   "(default 1 MiB)")
    s.add_argument("--log-dir", default=os.environ.get("MODELBUILD_SERVE_LOG_DIR", "serve-logs"),
                   help="request and feedback logs, in rotated segments (default $MODELBUILD_SERVE_LOG_DIR or "
                   "./serve-logs)")
    s.add_argument("--threads", type=int, default=0, help="torch threads of the inference worker (default: all)")
    s.set_defaults(fn=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # overrides may come after flags (`build r.yaml --json a.b=1`): argparse leaves those in `extra`
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _run(args)
    except ModelbuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing partial was kept; build again to carry on", file=sys.stderr)
        return errors.INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the last guard: a bug report, not a traceback
        if os.environ.get("MODELBUILD_FULL_ERROR") == "1":
            raise
        print(f"error: internal error: {type(e).__name__}: {e}. This is a bug in modelbuild; rerun with "
              "MODELBUILD_FULL_ERROR=1 for the traceback and report it", file=sys.stderr)
        return errors.BUILD_FAILED


def _run(args) -> int:
    """The verb, with a full disk, a read-only store or a damaged trace reported as such (exit 7 or 5)."""
    from .store import default_store_root, store_faults
    with store_faults(Path(args.store or default_store_root()).absolute()):
        return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
