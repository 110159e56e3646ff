"""Manifests and their signatures: what a cache says a derivation key built, and who vouches for it.

Keys, secret keys and signatures are spelled as Nix spells them (`NAME:BASE64`), so a team can read them
the same way. A signature covers a canonical fingerprint of everything but the signatures themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath

from ..errors import HashMismatch, UsageError
from ..hashing import canonical_json
from ..store import KEY_RE, NAME_RE

VERSION = 1
FINGERPRINT_PREFIX = "modelbuild-cache-v1\n"


# ---- keys ----------------------------------------------------------------------------------------------
def generate_key(name: str) -> tuple[str, str]:
    """A new key pair as (secret, public) lines: `NAME:BASE64(seed+public)`, `NAME:BASE64(public)`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    if not NAME_RE.fullmatch(name) or ":" in name:
        raise UsageError(f"key name {name!r} must be letters, digits, '-', '_' or '.', e.g. 'ci-cache-1' (it "
                         "prefixes every signature the key makes)")
    secret = Ed25519PrivateKey.generate()
    seed, public = _raw(secret), _raw(secret.public_key())
    return f"{name}:{_b64(seed + public)}", f"{name}:{_b64(public)}"


def public_of(secret_line: str, where: str) -> str:
    name, secret = load_secret(secret_line, where)
    return f"{name}:{_b64(_raw(secret.public_key()))}"


def check_secret(line: str, where: str) -> tuple[str, bytes]:
    """The secret key's name and bytes, refused before anything is pushed when the file is not a key."""
    name, raw = _split(line.strip(), where, "secret key")
    if len(raw) not in (32, 64):
        raise UsageError(f"{where} is not a modelbuild secret key (NAME:BASE64 of 64 bytes, as `modelbuild key "
                         "generate` writes): generate one with `modelbuild key generate NAME`")
    return name, raw


def load_secret(line: str, where: str):
    """(name, Ed25519PrivateKey) from a secret key file's text."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    name, raw = check_secret(line, where)
    return name, Ed25519PrivateKey.from_private_bytes(raw[:32])


def load_public(line: str, where: str):
    """(name, Ed25519PublicKey) from a `NAME:BASE64` public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    name, raw = _split(line.strip(), where, "public key")
    if len(raw) != 32:
        raise UsageError(f"{where}: {line!r} is not a public key (NAME:BASE64 of 32 bytes, as `modelbuild key "
                         "generate` prints it)")
    return name, Ed25519PublicKey.from_public_bytes(raw)


def _split(line: str, where: str, what: str) -> tuple[str, bytes]:
    name, sep, data = line.partition(":")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not sep or not name or not raw:
        shown = "its content" if what == "secret key" else repr(line[:60])  # a secret is never echoed
        raise UsageError(f"{where}: {shown} is not a {what}: expected NAME:BASE64, as `modelbuild key "
                         "generate` writes")
    return name, raw


def _raw(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    if hasattr(key, "private_bytes"):
        return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- manifests -----------------------------------------------------------------------------------------
def fingerprint(manifest: dict) -> bytes:
    """What a signature covers: the manifest's canonical JSON without its signatures."""
    body = {k: v for k, v in manifest.items() if k != "signatures"}
    return (FINGERPRINT_PREFIX + canonical_json(body)).encode()


def sign(manifest: dict, secret_line: str, where: str) -> dict:
    name, secret = load_secret(secret_line, where)
    signature = f"{name}:{_b64(secret.sign(fingerprint(manifest)))}"
    return {**manifest, "signatures": [signature]}


def encode(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def decode(data: bytes, key: str, where: str, trusted: dict) -> dict:
    """A manifest read from a cache, once it is signed by a trusted key and names only paths inside its
    artifact; anything else is refused (HashMismatch, exit 5) with the reason."""
    def refuse(why: str, fix: str = ""):
        return HashMismatch(f"the cache {where} offers key {key}, but {why}, so it is refused and nothing was "
                            f"written to the store{'. ' + fix if fix else ''}")
    try:
        manifest = json.loads(data)
    except ValueError:
        raise refuse("its manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        raise refuse("its manifest is not a modelbuild cache manifest (version 1)")
    _check_signature(manifest, trusted, refuse)
    if manifest.get("key") != key:
        raise refuse(f"its signed manifest is for key {manifest.get('key')!r}")
    _check_shape(manifest, refuse)
    return manifest


def _check_signature(manifest: dict, trusted: dict, refuse) -> None:
    from cryptography.exceptions import InvalidSignature
    signatures = manifest.get("signatures")
    if not signatures or not isinstance(signatures, list):
        raise refuse("its manifest is unsigned")
    names = []
    for sig in signatures:
        name, _, data = str(sig).partition(":")
        names.append(name)
        if name not in trusted:
            continue
        try:
            trusted[name].verify(base64.b64decode(data, validate=True), fingerprint(manifest))
            return
        except (InvalidSignature, binascii.Error, ValueError):
            raise refuse(f"its signature by '{name}' does not match its content (the manifest was changed "
                         "after it was signed)") from None
    known = ", ".join(sorted(trusted)) or "none"
    raise refuse(f"it is signed by {', '.join(repr(n) for n in names)}, which is not a trusted public key "
                 f"(trusted: {known})", "If you trust the signer, add its public key to trusted-public-keys "
                 "(or --trusted-public-key, MODELBUILD_TRUSTED_PUBLIC_KEYS)")


def _check_shape(manifest: dict, refuse) -> None:
    """Every name the manifest gives becomes a path: it must stay inside the artifact or the store."""
    if not isinstance(manifest.get("name"), str) or not NAME_RE.fullmatch(manifest["name"]):
        raise refuse(f"its artifact name {manifest.get('name')!r} is not a plain name")
    if not isinstance(manifest.get("digest"), str) or not KEY_RE.fullmatch(manifest["digest"]):
        raise refuse("its artifact digest is not 32 hex digits")
    files, links, dirs = manifest.get("files"), manifest.get("links"), manifest.get("dirs")
    if not isinstance(files, dict) or not isinstance(links, dict) or not isinstance(dirs, list):
        raise refuse("its manifest lacks the files, links and dirs lists")
    for rel in [*files, *links, *dirs]:
        if not _relative(rel):
            raise refuse(f"it names the path {rel!r}, which leads outside the artifact")
    for rel, entry in files.items():
        if not isinstance(entry, dict) or not KEY_RE.fullmatch(str(entry.get("digest"))):
            raise refuse(f"its entry for {rel!r} has no file digest")
        if "size" in entry and (type(entry["size"]) is not int or entry["size"] < 0):
            raise refuse(f"its entry for {rel!r} has the size {entry['size']!r}")
    for rel, target in links.items():
        if not isinstance(target, str) or target.startswith("/") or \
                not _relative(posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))):
            raise refuse(f"its symbolic link {rel!r} -> {target!r} leads outside the artifact")
    for ref in manifest.get("refs") or []:
        key = ref.get("key") if isinstance(ref, dict) else None
        path = ref.get("path") if isinstance(ref, dict) else None
        if (key is not None and not KEY_RE.fullmatch(str(key))) or not isinstance(path, str) or \
                not path.startswith("objects/") or not NAME_RE.fullmatch(path.removeprefix("objects/")):
            raise refuse(f"it names the input {ref!r}, which is not an artifact of a store")
    log = manifest.get("log")
    if log is not None and not KEY_RE.fullmatch(str(log)):
        raise refuse("its build log's digest is not 32 hex digits")


def _relative(rel) -> bool:
    """A path that stays inside the folder it is relative to."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    norm = posixpath.normpath(rel)
    return norm != ".." and not norm.startswith("../") and ".." not in rel.split("/") and norm != "."
