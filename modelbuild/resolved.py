"""A source as a build sees it: where it lies, its content digest, and what an auditor needs to find it again.

Shared by every kind of source (sources.py: paths and PyPI files; sources_dvc.py: DVC-tracked data), so that
neither of those modules imports the other at load time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .hashing import Unhashable, stat_identity, walk_tree


@dataclass
class ResolvedSource:
    path: Path  # what the builder reads: a file or a folder
    digest: str  # content hash (hash_tree), the source's identity in keys
    lineage: dict  # what an auditor needs to find it again

    @property
    def stat_identity(self) -> str:
        """Every file's (inode, size, mtime, ctime): a change during a build means its input moved under it."""
        return source_fingerprint(self.path)


def source_fingerprint(path: Path) -> str:
    """The stat identity of what a source's files and links lead to (as hash_tree(follow_links=True) reads
    them), so an edit to a link's target counts; a file that cannot be read any more is a change too."""
    try:
        if not Path(path).is_dir():
            return ":".join(map(str, stat_identity(os.stat(path))))
        return "\n".join(f"{rel}:{':'.join(map(str, stat_identity(st)))}"
                         for rel, _, st in walk_tree(Path(path), (), follow_links=True))
    except (OSError, Unhashable) as e:
        return f"unreadable: {e}"
