"""What a name from a user, a Hub answer or the HF cache must look like before it reaches a URL or a path.

A repo id, revision, commit or file name that fails here is refused: none of them may climb out of
the directory it names a place in (`..`, a leading `/`, a backslash, NUL), and a digest or commit
is hex of its exact length, so it can only ever be one file name.
"""

import hashlib
import re

from ...errors import InputError

# huggingface_hub's rule, <= 96 characters, in ASCII as the Hub has them: `\w` alone would admit
# full-width and other Unicode letters and digits that some file systems fold into ASCII ones.
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[\w.\-]{0,94}[A-Za-z0-9_])?", re.ASCII)
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_CHARS = 1024


def valid_repo_id(ref: str) -> bool:
    """`org/name` as the Hub allows it: letters, digits, `-`, `_`, `.`; no `--` or `..` (the cache's separators)."""
    parts = ref.split("/")
    return (len(parts) == 2 and all(_REPO_PART.fullmatch(p) for p in parts)
            and "--" not in ref and ".." not in ref)


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.fullmatch(revision))


def _climbs(name: str) -> bool:
    return (not name or len(name) > MAX_NAME_CHARS or name.startswith("/") or "\\" in name
            or bool(_CONTROL.search(name)) or any(p in ("", ".", "..") for p in name.split("/")))


def check_revision(revision: str) -> str:
    """A branch, tag or commit; it names a file under refs/, so it may not climb out of it."""
    if _climbs(revision):
        raise InputError(f"--revision {revision!r} is not a branch, tag or commit name")
    return revision


def valid_repo_file(name) -> bool:
    """A file path inside a repo (`config.json`, `shards/model-00001.safetensors`)."""
    return isinstance(name, str) and not _climbs(name)


def git_blob_sha(body: bytes) -> str:
    """The id git (and so the Hub's ETag) gives a file stored in git."""
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def blob_name(body: bytes, etag: str | None) -> str:
    """The name of a file's blob in the HF cache: a digest of `body` computed here, never the server's word.

    huggingface_hub names a blob by the ETag: the git blob sha1, or the sha256 of a file stored in
    LFS. The ETag only chooses which of the two; it must equal the digest of the bytes received.
    """
    tag = (etag or "").removeprefix("W/").strip('"')
    if _SHA256.fullmatch(tag) and hashlib.sha256(body).hexdigest() == tag:
        return tag
    return git_blob_sha(body)
