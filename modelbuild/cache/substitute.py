"""Substitution: take a derivation's artifact from a shared cache instead of building it.

A manifest is used only when a trusted key signed it and it names only paths inside its artifact; every
file is hashed after download, and the whole tree must hash to the signed digest. The artifact is then
committed exactly as a build commits (tmp/, read-only, rename, trace row last), under the key's lock, so a
refusal, a dead remote or a kill at any moment leaves nothing in the store but what gc and clean_tmp remove.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..errors import HashMismatch
from ..hashing import Unhashable, hash_file, hash_tree
from ..store import Store
from .manifest import decode, load_public
from .remote import Incomplete, Remote, Unreachable


class Substituter:
    """The substituters of one build, tried in order; one that cannot be reached is warned about once and
    skipped, so the build goes on (and builds what it would have provided)."""

    def __init__(self, store: Store, urls: list[str], trusted_keys: list[str], project_dir: Path | None = None):
        self.store = store
        self.remotes = [Remote(u, project_dir) for u in urls]
        self.trusted = dict(load_public(k, "a trusted public key") for k in trusted_keys)
        self.down: set[str] = set()

    def substitute(self, key: str, _seen: frozenset = frozenset()) -> Path | None:
        """The artifact of `key`, fetched, verified and committed; None when no reachable cache has it.
        A manifest that is not trustworthy raises HashMismatch (exit 5): it is never silently skipped."""
        for remote in self.remotes:
            if remote.url in self.down:
                continue
            try:
                remote.check()
                data = remote.read_manifest(key)
                if data is None:
                    continue
                manifest = decode(data, key, remote.url, self.trusted)
                path = self._fetch(remote, manifest, _seen | {key})
            except Unreachable as e:
                self.down.add(remote.url)
                print(f"warning: the cache {remote.url} cannot be reached ({str(e)[:200]}); building what it "
                      "would have provided", file=sys.stderr, flush=True)
                continue
            except Incomplete as e:
                print(f"warning: the cache {remote.url} has a manifest for key {key} but not all its files "
                      f"({str(e)[:200]}); nothing of it was kept", file=sys.stderr, flush=True)
                continue
            if path is not None:
                return path
        return None

    def _fetch(self, remote: Remote, manifest: dict, seen: frozenset) -> Path | None:
        refs = self._inputs(manifest, seen)
        if refs is None:
            return None
        key = manifest["key"]
        with self.store.lock(key):
            hit = self.store.lookup(key)
            if hit and self.store.check_artifact(hit[0]):
                return hit[0]  # another process substituted or built it meanwhile
            tmp = self.store.new_tmp(key)
            try:
                out = tmp / "out"
                try:
                    self._download(remote, manifest, out)
                except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
                    raise HashMismatch(f"the cache {remote.url} offers key {key}, but its manifest names one path "
                                       f"twice ({e.filename}), so it is refused and nothing was written to the "
                                       "store") from None
                _verify(out, manifest, remote.url)
                self._keep_log(remote, manifest, tmp)
                meta = {k: v for k, v in (manifest.get("meta") or {}).items() if k not in ("digest", "path", "files")}
                return self.store.commit(key, manifest["name"], out, meta, refs)
            finally:
                self.store.drop_tmp(tmp)

    def _inputs(self, manifest: dict, seen: frozenset) -> list[Path] | None:
        """The artifacts the manifest's artifact refers to, substituted first where missing; None when one
        cannot be had (then the step is built instead)."""
        paths = []
        for ref in manifest.get("refs") or []:
            path = self.store.root / ref["path"]
            if not (path.is_dir() and self.store.check_artifact(path)):
                if not ref.get("key") or ref["key"] in seen or self.substitute(ref["key"], seen) != path:
                    return None
            paths.append(path)
        return paths

    def _download(self, remote: Remote, manifest: dict, out: Path) -> None:
        """Lay out the tree: folders, each distinct file once (from this store's own copy where it has one,
        else from the cache), duplicates copied, then links."""
        out.mkdir()
        for rel in sorted(manifest["dirs"]):
            (out / rel).mkdir(parents=True, exist_ok=True)
        first: dict[str, str] = {}
        for rel, entry in sorted(manifest["files"].items()):
            first.setdefault(entry["digest"], rel)
        fetch = [d for d, rel in first.items() if not self._link_local(d, out / first[d])]
        for rel in {first[d] for d in fetch}:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
        remote.get_files(fetch, [str(out / first[d]) for d in fetch])
        for rel, entry in manifest["files"].items():
            target = out / rel
            if first[entry["digest"]] != rel:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / first[entry["digest"]], target)
            os.chmod(target, 0o755 if entry.get("executable") else 0o644)
        for rel, target in sorted(manifest["links"].items()):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, out / rel)

    def _link_local(self, digest: str, target: Path) -> bool:
        """Copy a file this store already holds (identical content is stored once, across artifacts)."""
        for name in (digest, f"{digest}x"):
            link = self.store.links / name
            if link.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(link, target)
                if hash_file(target) == digest:
                    return True
                target.unlink()
        return False

    def _keep_log(self, remote: Remote, manifest: dict, tmp: Path) -> None:
        """The build log travels with the artifact, so `modelbuild log` works on a substituted one."""
        digest, key = manifest.get("log"), manifest["key"]
        target = self.store.logs / f"{key}.log"
        if not digest or target.exists():
            return
        local = tmp / "log"
        remote.get_files([digest], [str(local)])
        if hash_file(local) != digest:
            raise HashMismatch(f"the cache {remote.url} offers key {key}, but its build log does not match its "
                               "signed digest, so it is refused and nothing was written to the store")
        self.store.logs.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)


def _verify(out: Path, manifest: dict, where: str) -> None:
    """Every file's digest, then the whole tree's (names, modes, links), against the signed manifest."""
    key = manifest["key"]
    try:
        tree = hash_tree(out)
    except Unhashable as e:
        raise HashMismatch(f"the cache {where} offers key {key}, but its artifact cannot be kept ({e}), so it is "
                           "refused and nothing was written to the store") from None
    for rel, entry in sorted(manifest["files"].items()):
        got = tree.entries.get(rel)
        if got is None or got.digest != entry["digest"]:
            raise HashMismatch(f"the cache {where} offers key {key}, but its file {rel} has the digest "
                               f"{got.digest if got else 'none'} instead of the signed {entry['digest']} (damaged "
                               "or tampered with in the cache), so it is refused and nothing was written to the store")
    if tree.digest != manifest["digest"]:
        raise HashMismatch(f"the cache {where} offers key {key}, but its files do not add up to the signed artifact "
                           f"digest {manifest['digest']} (got {tree.digest}), so it is refused and nothing was "
                           "written to the store")
