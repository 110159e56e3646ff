"""DVC sources: a path tracked by DVC in a git repository, at a revision, as a fixed-output derivation.

`{dvc: {repo, path, rev}}` is resolved in three moves:

1. the revision becomes a git commit (`git rev-parse` for a local repo; DVC's own clone for a URL). No
   `rev:` means the repo's HEAD commit: uncommitted `dvc add`s in its workspace are not seen;
2. DVC's md5 of the path at that commit is read from the `.dvc` file or `dvc.lock` committed there
   (`DVCFileSystem.info`, which reads metadata only, never the data);
3. the key `hash_json({"fixed-output": "dvc", repo, path, md5})` is looked up in the store. On a miss the
   file or folder is copied out of DVC (its local cache `.dvc/cache`, else its remote) into the store,
   as files of its own (never links into DVC's cache), checked against DVC's md5, and committed under the
   key's lock, like a PyPI source.

The revision is not part of the key: two revisions with the same data share one artifact, and a
revision that changes the data makes a new key. The lineage records the revision as written, the
commit it meant, DVC's md5 and modelbuild's content hash side by side, so an artifact can be matched
to DVC's history. `dvc` is imported only here, and only when a recipe has a DVC source.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import HashMismatch, UsageError, did_you_mean
from .hashing import hash_json
from .recipe import Source
from .resolved import ResolvedSource
from .store import Store

_URL_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[^/:@\s]+@[^/:\s]+:)")  # scheme://... or user@host:path
_LIST = 8  # at most this many tags, branches or paths named in a message


def is_url(repo: str) -> bool:
    return bool(_URL_RE.match(repo))


def normalise_repo(repo: str, recipe_dir: Path) -> str:
    """A git URL as written (less a trailing '/'); a local repo as an absolute, resolved path."""
    repo = repo.strip()
    if is_url(repo):
        return repo.rstrip("/")
    return str((Path(recipe_dir) / os.path.expanduser(repo)).resolve())


def dvc_key(repo: str, path: str, md5: str) -> str:
    """The fixed-output key: what DVC says the content is, not which revision named it."""
    return hash_json({"fixed-output": "dvc", "repo": repo, "path": path, "md5": md5})


def resolve_dvc(source: Source, store: Store, recipe_dir: Path, *, fetch: bool = True) -> ResolvedSource | None:
    """Resolve and, if needed, fetch a DVC source. Returns None if it is not stored and `fetch` is False."""
    spec = source.spec["dvc"]
    written = spec["repo"]
    repo = normalise_repo(written, recipe_dir)
    path = spec["path"].strip("/")
    rev = spec.get("rev")
    what = f"the DVC source {path} in {written}" + (f" at rev {rev}" if rev else "")
    api = _import_dvc()
    local = not is_url(repo)
    if local:
        commit = _local_commit(repo, rev, what)
        fs = _open_fs(api, repo, commit, what, rev)
    else:
        fs = _open_fs(api, repo, rev, what, rev)
        commit = fs.repo.get_rev()  # the clone is made: cheap
    try:
        if fs.repo.dvc_dir is None:
            raise UsageError(f"{what}: {repo} is a git repository but not a DVC project at commit {commit[:12]} "
                             "(no .dvc/ folder there). Run `dvc init` in it and commit, or point `repo:` at the "
                             "DVC project")
        md5, hash_name = _dvc_md5(fs, path, what, commit)
        key = dvc_key(repo, path, md5)
        hit = store.lookup(key) if store.exists() else None  # a dry run creates no store
        if not (hit and store.check_artifact(hit[0])):
            if not fetch:
                return None
            _fetch_dvc(store, key, fs, path, md5, hash_name, what, local=local, repo=repo, commit=commit)
            hit = store.lookup(key)
    finally:
        _close(fs)
    artifact, meta = hit
    digest = meta["source_hash"]
    return ResolvedSource(artifact / Path(path).name, digest,
                          {"kind": "dvc", "repo": repo, "path": path, "rev": rev, "commit": commit,
                           "dvc_md5": md5, "hash": digest, "artifact": store.rel(artifact)})


# ---- resolving -------------------------------------------------------------------------------------
def _import_dvc():
    try:
        import dvc.api
    except ImportError:
        raise UsageError("the recipe has a DVC source (`dvc: {repo, path, rev}`), but DVC is not installed in "
                         "this environment. Install it with `pip install 'modelbuild[dvc]'`") from None
    return dvc.api


def _git(repo: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise UsageError("DVC sources need git, and no `git` command was found: install git") from None


def _local_commit(repo: str, rev: str | None, what: str) -> str:
    """The commit a revision of a local repo names; clear errors for a missing repo or an unknown rev."""
    if not Path(repo).is_dir():
        parent = Path(repo).parent
        near = did_you_mean(Path(repo).name, [p.name for p in parent.iterdir() if p.is_dir()]) \
            if parent.is_dir() else ""
        raise UsageError(f"{what}: the repo {repo} does not exist{near}. `repo:` is a git URL or the path of "
                         "a git+DVC repository, relative to the recipe's folder")
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UsageError(f"{what}: {repo} is not a git repository. `repo:` must be a git+DVC repository (`git "
                         "init && dvc init`, then `dvc add` the data and commit), or a git URL of one")
    want = rev or "HEAD"
    proc = _git(repo, "rev-parse", "--verify", "--quiet", f"{want}^{{commit}}")
    if proc.returncode == 0:
        return proc.stdout.strip()
    if rev is None:
        raise UsageError(f"{what}: the repo {repo} has no commits yet. Commit the `.dvc` files (`git add "
                         "*.dvc .dvc && git commit`), or give `rev:`")
    tags = _git(repo, "tag", "--list", "--sort=-creatordate").stdout.split()
    branches = _git(repo, "branch", "--list", "--format=%(refname:short)").stdout.split()
    known = [f"tags {_names(tags)}" if tags else "", f"branches {_names(branches)}" if branches else ""]
    listing = " and ".join(k for k in known if k) or "no tags or branches"
    raise UsageError(f"{what}: unknown rev '{rev}'{did_you_mean(rev, tags + branches)}; the repo has {listing}. "
                     "Set `rev:` to one of them or a commit SHA (or leave it out for the repo's HEAD)")


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _LIST else "")


def _open_fs(api, repo: str, rev: str | None, what: str, written_rev: str | None):
    """DVC's view of the repo at `rev`. DVC opens (and for a URL, clones) lazily: `fs.repo` is touched here."""
    from dvc.exceptions import DvcException
    from dvc.scm import CloneError, RevError
    try:
        fs = api.DVCFileSystem(repo, rev=rev)
        fs.repo  # noqa: B018 - opens the repo, resolves the rev
        return fs
    except RevError:
        tags = _remote_tags(api, repo)
        known = f"; the repo has tags {_names(tags)}" if tags else ""
        raise UsageError(f"{what}: unknown rev '{written_rev}'{did_you_mean(written_rev, tags)}{known}. Set `rev:` "
                         f"to a tag, branch or commit of the repo (`git ls-remote {repo}` lists them), or leave it "
                         "out for its HEAD") from None
    except CloneError as e:
        cause = f": {_one_line(e.__cause__)}" if e.__cause__ else ""
        raise UsageError(f"{what}: cannot clone {repo}{cause}. Check the URL, the network and your git "
                         "credentials; or clone it yourself and give the local path as `repo:`") from None
    except (DvcException, OSError) as e:
        raise UsageError(f"{what}: DVC cannot open the repo {repo}: {_one_line(e)}. Check that it is a git+DVC "
                         "repository (`dvc init`) and that `dvc status` works in it") from None


def _remote_tags(api, repo: str) -> list[str]:
    """The tags of a cloned repo, for an error message (DVC keeps the clone for this process)."""
    try:
        fs = api.DVCFileSystem(repo)
        try:
            return sorted(fs.repo.scm.list_tags())
        finally:
            _close(fs)
    except Exception:  # noqa: BLE001 - only a hint
        return []


def _dvc_md5(fs, path: str, what: str, commit: str) -> tuple[str, str]:
    """DVC's md5 of a tracked file or folder ('<md5>.dir' for a folder) and its hash name, from metadata."""
    try:
        info = fs.info(path)
    except FileNotFoundError:
        tracked = _tracked(fs)
        raise UsageError(f"{what}: '{path}' is not tracked by DVC at commit {commit[:12]}"
                         f"{did_you_mean(path, tracked)}. The repo tracks {_names(tracked) or 'nothing yet'}. "
                         "Fix `path:` (relative to the repo's root), or `dvc add` the file and commit") from None
    dvc_info = info.get("dvc_info") or {}
    md5 = dvc_info.get("md5") or info.get("md5")
    if not md5:
        tracked = _tracked(fs)
        under = [t for t in tracked if t.startswith(path + "/")]
        above = [t for t in tracked if path.startswith(t + "/")]
        if above:
            raise UsageError(f"{what}: '{path}' is a folder inside the DVC-tracked folder {above[0]}, and DVC "
                             f"records no md5 for a part of a folder. Name `path: {above[0]}` (a step can read "
                             f"{path[len(above[0]) + 1:]} inside it), or one file in it")
        if info.get("type") == "directory" and under:
            hint = (f"it is a folder holding the DVC-tracked paths {_names(under)}: name one of them as `path:`, "
                    f"or `dvc add {path}` to track the folder as one")
        else:
            hint = (f"it is in git but not tracked by DVC: read it as a plain `{{path: ...}}` source, or "
                    f"`dvc add {path}` and commit")
        raise UsageError(f"{what}: '{path}' is not tracked by DVC at commit {commit[:12]}; {hint}")
    entry = dvc_info.get("entry")
    hash_info = getattr(entry, "hash_info", None)
    return str(md5), str(getattr(hash_info, "name", None) or "md5")


def _tracked(fs) -> list[str]:
    """The paths DVC tracks at the filesystem's revision (outputs of .dvc files and dvc.lock)."""
    try:
        return sorted(str(o.fs_path).lstrip("/") for o in fs.repo.index.outs)
    except Exception:  # noqa: BLE001 - only a hint for an error message
        return []


def _close(fs) -> None:
    try:
        fs.close()
    except Exception:  # noqa: BLE001
        pass


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- fetching --------------------------------------------------------------------------------------
def _fetch_dvc(store: Store, key: str, fs, path: str, md5: str, hash_name: str, what: str, *, local: bool,
               repo: str, commit: str) -> Path:
    def fill(work: Path):
        out = work / "out"
        out.mkdir()
        target = out / Path(path).name
        isdir = md5.endswith(".dir")
        expected = _expected_md5s(fs, path, isdir) if hash_name == "md5" else None
        _copy_out(fs, path, target, isdir, what, local)
        if hash_name == "md5":
            _verify(target, md5, expected, what, repo)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"dvc-{Path(path).name}")
        return name, target, {"source": {"dvc": {"repo": repo, "path": path, "md5": md5}}, "dvc_md5": md5,
                              "fetched_at_commit": commit}
    return store.fetch_source(key, fill)


def _copy_out(fs, path: str, target: Path, isdir: bool, what: str, local: bool) -> None:
    from dvc.exceptions import DvcException
    try:
        if isdir:
            fs.get(path, str(target), recursive=True)
        else:
            fs.get_file(path, str(target))
    except (FileNotFoundError, DvcException) as e:
        where = ("the repo's local DVC cache (.dvc/cache) nor on its DVC remote" if local
                 else "the DVC remote of the repo")
        raise UsageError(f"{what}: its data is neither in {where} ({_one_line(e)}). In the repo run "
                         f"`dvc pull {path}` (at that revision), or configure its remote with `dvc remote add -d "
                         "NAME URL` so DVC can download it") from None
    if not target.exists():  # an empty tracked folder
        target.mkdir(parents=True)
    _own_copies(target)


def _own_copies(target: Path) -> None:
    """Replace the links DVC may copy out (`cache.type` symlink or hardlink) with copies: the artifact must
    hold its bytes, not lean on (or share an inode with) the repo's cache, which may change or go."""
    files = [target] if not target.is_dir() or target.is_symlink() else \
        [Path(d, f) for d, _, names in os.walk(target) for f in names]
    for f in files:
        if f.is_symlink() or os.lstat(f).st_nlink > 1:
            tmp = f.with_name(f".{f.name}.copy")
            shutil.copy(f, tmp)  # a link's content and mode (its executable bit)
            os.replace(tmp, f)


def _expected_md5s(fs, path: str, isdir: bool) -> dict[str, str] | None:
    """rel path -> DVC md5 of each file, to check what DVC copied out (a damaged DVC cache is not trusted)."""
    if not isdir:
        return None
    try:
        found = fs.find(path, detail=True)
    except Exception:  # noqa: BLE001 - the listing is an extra check; the copy reports real failures
        return None
    out = {}
    for p, info in found.items():
        md5 = (info.get("dvc_info") or {}).get("md5") or info.get("md5")
        if not md5:
            return None
        out[os.path.relpath(str(p).lstrip("/"), path)] = str(md5)
    return out


def _verify(target: Path, md5: str, expected: dict[str, str] | None, what: str, repo: str) -> None:
    """Compare what DVC copied out with the md5s it recorded (only for DVC 3's plain `md5` hashes)."""
    if md5.endswith(".dir"):
        if expected is None:
            return
        got = {p.relative_to(target).as_posix(): _md5(p) for p in target.rglob("*") if p.is_file()}
        bad = sorted(rel for rel in set(got) | set(expected) if got.get(rel) != expected.get(rel))
    else:
        bad = [target.name] if _md5(target) != md5 else []
    if bad:
        raise HashMismatch(f"{what}: the data DVC copied out does not match the md5 DVC recorded for "
                           f"{_names(bad)}: its cache or remote holds damaged data. In {repo} remove the damaged "
                           "entries from .dvc/cache (`dvc cache dir` shows where) and `dvc pull` again, then rebuild")


def _md5(p: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
