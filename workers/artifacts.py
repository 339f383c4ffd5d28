"""Content-addressed artifact store: checkpoints, probe sets, exported files.

The store is a directory or any fsspec URL (`file:///srv/carrygate`, `s3://bucket/prefix`, ...), so
the API and workers on other machines see the same files. Writes stream in fixed-size chunks while
hashing (constant memory, a 2 GB official ARC checkpoint included), land under a temporary name and
are moved to `sha256/<first two hex>/<hash>` only when complete, so readers never see half a file.
An upload over the size limit is deleted before anything is recorded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fsspec

CHUNK = 1 << 20


class TooLarge(ValueError):
    """The stream exceeded the store's size limit; nothing was kept."""


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size: int
    path: str  # store-relative key


class ArtifactStore:
    def __init__(self, url: str | Path) -> None:
        self.url = str(url).rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.fs.makedirs(self.root, exist_ok=True)
        self.is_local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    def _full(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put_stream(self, chunks: Iterable[bytes] | BinaryIO, *, limit: int | None = None) -> StoredArtifact:
        """Store a byte stream; raises TooLarge (nothing kept) past `limit` bytes."""
        if hasattr(chunks, "read"):
            reader = chunks  # a file object: read it in fixed-size chunks
            chunks = iter(lambda: reader.read(CHUNK), b"")  # type: ignore[union-attr]
        digest, size = hashlib.sha256(), 0
        tmp_key = f"tmp/{uuid.uuid4().hex}"
        self.fs.makedirs(self._full("tmp"), exist_ok=True)
        try:
            with self.fs.open(self._full(tmp_key), "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise TooLarge(f"upload exceeds the limit of {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            self.fs.rm(self._full(tmp_key))
            raise
        sha = digest.hexdigest()
        key = f"sha256/{sha[:2]}/{sha}"
        if self.fs.exists(self._full(key)):
            self.fs.rm(self._full(tmp_key))  # deduplicated: same content already stored
        else:
            self.fs.makedirs(self._full(f"sha256/{sha[:2]}"), exist_ok=True)
            self.fs.mv(self._full(tmp_key), self._full(key))
        return StoredArtifact(sha256=sha, size=size, path=key)

    def put_file(self, path: str | Path, *, limit: int | None = None) -> StoredArtifact:
        with open(path, "rb") as f:
            return self.put_stream(f, limit=limit)

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._full(key)))

    def local_path(self, key: str, cache_dir: str | Path | None = None) -> Path:
        """A local file for `key`: the file itself for a local store, else a cached download."""
        if self.is_local:
            return Path(self._full(key))
        cache = Path(cache_dir or tempfile.gettempdir()) / "carrygate-artifacts"
        target = cache / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own: two workers may fetch the same artifact at once.
            partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
            try:
                with self.fs.open(self._full(key), "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return target


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
