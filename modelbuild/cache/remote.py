"""A cache remote: a folder on any file system DVC can reach, opened the way DVC opens its remotes.

`URL` is a directory (`/mnt/cache`, `file:///mnt/cache`), a cloud URL (`s3://bucket/prefix`, with DVC's
remote options as a query: `s3://bucket/cache?endpointurl=http://127.0.0.1:9000`), or `remote://NAME[/SUB]`:
the DVC remote NAME of the project's .dvc/config, with its credentials and options. Errors that mean "not
there" are misses; any other error means the remote cannot be reached (`Unreachable`).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..errors import UsageError

JOBS = 8  # parallel transfers, as `dvc push -j`


class Unreachable(Exception):
    """The remote did not answer (network, credentials, a missing folder): a substituter is skipped."""


class Incomplete(Exception):
    """The cache lacks a file its manifest names (removed by hand, or a cache cleaned without care)."""


class Remote:
    """A cache's folder. A directory cache answers 'is it there?' with the os module alone, so a push of what
    the cache already has loads no file-system library (half of a no-op push's time otherwise)."""

    def __init__(self, url: str, project_dir: Path | None = None):
        self.url, self.project_dir = url, project_dir or Path.cwd()
        self.local = local_path(url)
        self.root = self.local
        self._fs = None

    def __str__(self) -> str:
        return self.url

    @property
    def fs(self):
        if self._fs is None:
            self._fs, self.root = open_fs(self.url, self.project_dir)
        return self._fs

    def _path(self, *parts: str) -> str:
        if self.local:
            return os.path.join(self.local, *parts)
        fs = self.fs  # opening it sets the root
        return fs.join(self.root, *parts)

    def file_path(self, digest: str) -> str:
        return self._path("files", digest)

    def manifest_path(self, key: str) -> str:
        return self._path("manifests", f"{key}.json")

    def read_manifest(self, key: str) -> bytes | None:
        if self.local:
            try:
                return Path(self.manifest_path(key)).read_bytes()
            except FileNotFoundError:
                return None
        with self._reaching():
            try:
                return self.fs.cat_file(self.manifest_path(key))
            except FileNotFoundError:
                return None

    def has_manifests(self, keys: list[str]) -> list[bool]:
        if self.local:
            return [os.path.exists(self.manifest_path(k)) for k in keys]
        with self._reaching():
            return list(self.fs.exists([self.manifest_path(k) for k in keys], batch_size=JOBS)) if keys else []

    def missing_files(self, digests: list[str]) -> list[str]:
        if self.local:
            return [d for d in digests if not os.path.exists(self.file_path(d))]
        with self._reaching():
            found = self.fs.exists([self.file_path(d) for d in digests], batch_size=JOBS) if digests else []
        return [d for d, ok in zip(digests, found, strict=True) if not ok]

    def get_files(self, digests: list[str], targets: list[str]) -> None:
        """Download, one stream per file, up to JOBS files at once. (Parallel ranges of one large file were
        measured slower against moto, which reads the whole object for each range.)"""
        with self._reaching():
            try:
                self.fs.get([self.file_path(d) for d in digests], targets, batch_size=JOBS)
            except FileNotFoundError as e:
                raise Incomplete(f"it has no file {getattr(e, 'filename', None) or e}") from None

    def put_files(self, sources: list[str], digests: list[str]) -> None:
        """Upload content-addressed files; each appears whole or not at all (DVC's own put is atomic)."""
        if not sources:
            return
        with self._reaching():
            self.fs.makedirs(self._path("files"), exist_ok=True)
            self.fs.put(sources, [self.file_path(d) for d in digests], batch_size=JOBS)

    def put_bytes(self, path: str, data: bytes) -> None:
        """Publish a small file whole: a reader sees the old one or the new one, never a part."""
        with tempfile.TemporaryDirectory(prefix="modelbuild-push-") as tmp:
            local = os.path.join(tmp, uuid.uuid4().hex)
            Path(local).write_bytes(data)
            with self._reaching():
                self.fs.makedirs(self.fs.parent(path), exist_ok=True)
                self.fs.put_file(local, path)

    def check(self) -> None:
        """A directory remote must exist (a mistyped path is not an empty cache)."""
        if self.local and not os.path.isdir(self.local):
            raise Unreachable(f"the folder {self.local} does not exist")

    def create(self) -> None:
        """Make the cache's folder, as `dvc push` makes its remote's (object stores need none)."""
        if self.local:
            with self._reaching():
                os.makedirs(self.local, exist_ok=True)

    def _reaching(self):
        return _Reaching(self)


class _Reaching:
    """Turn whatever a file system raises for a dead remote into Unreachable; 'not found' passes through."""

    def __init__(self, remote: Remote):
        self.remote = remote

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, (FileNotFoundError, KeyboardInterrupt, Unreachable, Incomplete)):
            return False
        if isinstance(error, Exception):
            raise Unreachable(f"{type(error).__name__}: {error}".strip().rstrip(":")) from error
        return False


def local_path(url: str) -> str | None:
    """The folder a directory cache's URL names (absolute), or None for any other kind of remote."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        return None
    return os.path.abspath(os.path.expanduser(parts.path if parts.scheme else url))


def open_fs(url: str, project_dir: Path):
    """(a dvc-objects FileSystem, the cache's root path on it) for URL, as DVC opens that remote: a DVC
    remote by name through DVC's own config; a URL through the file system DVC registers for its scheme."""
    parts = urlsplit(url)
    options = {k: _option(v) for k, v in parse_qsl(parts.query)}
    try:
        if parts.scheme == "remote":
            from dvc.fs import get_cloud_fs
            cls, conf, path = get_cloud_fs(_dvc_config(project_dir, parts.netloc),
                                           url=f"remote://{parts.netloc}{parts.path}", **options)
            return cls(**conf), path
        if local_path(url):
            from dvc_objects.fs.local import LocalFileSystem
            return LocalFileSystem(), local_path(url)
        from dvc_objects.fs import get_fs_cls, registry
        if parts.scheme not in registry:
            raise UsageError(f"the cache {url}: '{parts.scheme}://' is not a kind of remote DVC knows (it knows "
                             f"{', '.join(sorted(registry))}); give a folder, s3://... or remote://NAME")
        bare = parts._replace(query="").geturl()
        cls = get_fs_cls({"url": bare})
        return cls(**{**cls._get_kwargs_from_urls(bare), **options}), cls._strip_protocol(bare)
    except UsageError:
        raise
    except ImportError as e:
        raise UsageError(f"the cache {url}: {e}") from None
    except Exception as e:  # noqa: BLE001 - DVC's config errors: an unknown option, a bad URL
        raise UsageError(f"the cache {url} cannot be opened: {e}. Give a folder, a URL DVC understands "
                         "(s3://bucket/prefix?endpointurl=...), or remote://NAME for a remote of .dvc/config") from None


def _option(value: str):
    """A remote option from a URL's query, typed as DVC's config would type it (true, 300, 0.5)."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _dvc_config(project_dir: Path, name: str) -> dict:
    """The project's DVC configuration (.dvc/config and config.local), where NAME must be a remote."""
    from dvc.config import Config
    for folder in (project_dir, *project_dir.parents):
        if (folder / ".dvc").is_dir():
            config = Config(dvc_dir=str(folder / ".dvc"))
            if name.lower() not in config.get("remote", {}):
                known = ", ".join(sorted(config.get("remote", {}))) or "none"
                raise UsageError(f"the cache remote://{name}: {folder / '.dvc' / 'config'} has no remote '{name}' "
                                 f"(its remotes: {known}); add it with `dvc remote add {name} URL`")
            return config
    raise UsageError(f"the cache remote://{name} names a DVC remote, but {project_dir} is not in a DVC project "
                     "(no .dvc folder): give the remote's URL instead")
