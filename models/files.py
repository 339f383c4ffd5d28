"""Reading files a request named: regular files only, each read with a size limit.

A path that a client can name (a registered checkpoint, its config, a probe dataset) may be a FIFO, a
device, a `/proc` entry or a symlink to any of these. Opening a FIFO for reading blocks until a writer
appears, which hung a request for ever; `/dev/zero` never ends; `/proc` files report size 0 but are
not empty. So every open here:
- uses `O_NONBLOCK` (opening a FIFO returns at once instead of waiting for a writer) and `O_NOCTTY`;
- then checks the *opened* descriptor with `fstat`, so a file swapped for a FIFO between a check and
  the open is still refused (no time-of-check/time-of-use gap);
- accepts only regular files no larger than the caller's limit, and reads at most `limit + 1` bytes,
  so a file that grows while being read is refused too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SMALL_FILE_LIMIT = 16 * MIB
"""Config files (config.json, all_config.yaml, dataset.json): far above any real one (a few KiB)."""
CHUNK = MIB


class UnsafeFile(ValueError):
    """The path is not a regular file within its size limit; the message names the file and why."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _is_proc(path: Path) -> bool:
    # /proc and /sys entries are "regular" with st_size 0 (or 4096) whatever they hold.
    return path.parts[:2] in (("/", "proc"), ("/", "sys"))


def check_regular(path: str | Path, *, limit: int, allow_empty: bool = True) -> os.stat_result:
    """`stat` of `path` (symlinks followed) if it is a regular file of at most `limit` bytes; UnsafeFile
    otherwise. Nothing is opened, so this never blocks; use `open_regular` to read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as err:
        raise UnsafeFile(f"{path}: cannot read it: {err.strerror}") from err
    return _checked(path, st, limit=limit, allow_empty=allow_empty)


def _checked(path: Path, st: os.stat_result, *, limit: int, allow_empty: bool) -> os.stat_result:
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path}: {_kind(st.st_mode)}; only regular files are read")
    if _is_proc(Path(os.path.realpath(path))):
        raise UnsafeFile(f"{path}: a /proc or /sys entry; only regular files are read")
    if st.st_size > limit:
        raise UnsafeFile(f"{path}: {st.st_size} bytes, over the limit of {limit}")
    if st.st_size == 0 and not allow_empty:
        raise UnsafeFile(f"{path}: an empty (0-byte) file")
    return st


def open_regular(path: str | Path, *, limit: int, allow_empty: bool = True) -> int:
    """An open read-only descriptor on `path`, checked after opening (see the module docstring). The caller closes it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise UnsafeFile(f"{path}: cannot read it: {err.strerror}") from err
    try:
        _checked(path, os.fstat(fd), limit=limit, allow_empty=allow_empty)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | Path, *, limit: int = SMALL_FILE_LIMIT, allow_empty: bool = True) -> bytes:
    """The whole file, refused (UnsafeFile) if it is not regular or holds more than `limit` bytes."""
    fd = open_regular(path, limit=limit, allow_empty=allow_empty)
    parts, size = [], 0
    try:
        while chunk := os.read(fd, min(CHUNK, limit + 1 - size)):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UnsafeFile(f"{path}: grew past the limit of {limit} bytes while being read")
    finally:
        os.close(fd)
    return b"".join(parts)


def read_text(path: str | Path, *, limit: int = SMALL_FILE_LIMIT) -> str:
    """`read_bytes` decoded as UTF-8; a file that is not UTF-8 is an UnsafeFile naming it."""
    data = read_bytes(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnsafeFile(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err


def sha256_regular(path: str | Path, *, limit: int) -> tuple[str, int]:
    """-> (sha256 hex, size) of a regular, non-empty file of at most `limit` bytes."""
    fd = open_regular(path, limit=limit, allow_empty=False)
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if size > limit:
                raise UnsafeFile(f"{path}: grew past the limit of {limit} bytes while being read")
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def confine(path: str | Path, roots: list[Path] | tuple[Path, ...] | list[str] | tuple[str, ...]) -> Path:
    """`path` with every symlink resolved, if it lies under one of `roots` (also resolved); UnsafeFile
    otherwise. No roots: any path (the single-user embedded default). Resolving first is what makes a
    symlink inside a root that points out of it count as outside."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as err:  # `~nosuchuser`, a symlink loop, a NUL byte: never a 500
        raise UnsafeFile(f"{path}: not a usable path ({err})") from err
    folders = [Path(root).expanduser().resolve() for root in roots]
    if folders and not any(resolved.is_relative_to(root) for root in folders):
        raise UnsafeFile(f"{path} is outside the allowed folders (CARRYGATE_REGISTER_ROOTS)")
    return resolved


def yaml_mapping(text: str, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds (empty file: {}); malformed YAML or another top-level type is a
    ValueError naming `what` ("a gate policy file"), like any other bad input."""
    import yaml

    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{what} must be valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} must hold a mapping")
    return data
