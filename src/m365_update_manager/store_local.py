"""The local folder store: the same layout as the container, under one directory."""

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from m365_update_manager.errors import LockError, StorageError
from m365_update_manager.storage import LOCK_BLOB, BlobInfo

log = logging.getLogger(__name__)

META_SUFFIX = ".metadata.json"
PARTIAL_SUFFIX = ".partial"
CHUNK = 1024 * 1024


P = ParamSpec("P")
R = TypeVar("R")


def _as_storage_error(method: Callable[P, R]) -> Callable[P, R]:
    """Report an operating-system error (a file where a folder belongs, a full disk,
    a name the file system refuses) as one ``StorageError`` line."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"local folder store: {method.__name__} failed ({exc}); "
                "check M365_STORE_DIR and the disk"
            ) from None

    return wrapper


class LocalBlobStore:
    """Blobs as files under ``root``; metadata in a JSON file beside each blob.

    Every write goes through a temporary file in the same folder and a rename, so
    a reader sees the old file or the new one, never a part. Two files cannot be
    renamed at once: the bytes go first, then the metadata, which records the
    bytes' fingerprint (inode, size, mtime). Metadata whose fingerprint no longer
    matches (a run killed between the two renames, or a store copied elsewhere)
    is trusted only if the bytes still hash to its SHA-256.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"local folder {root}"

    def ensure_ready(self) -> None:
        """Create the folder when it is missing."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the store folder {self.root}: {exc}"
            ) from None

    @_as_storage_error
    def info(self, name: str) -> BlobInfo | None:
        """Return a blob's size and metadata, or None when it does not exist."""
        path = self._path(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        meta = _checked_meta(path, stat, self._read_meta(path))
        return BlobInfo(name, stat.st_size, meta.get("version"), meta.get("sha256"))

    @_as_storage_error
    def list(self, prefix: str) -> list[BlobInfo]:
        """Return every blob whose name starts with ``prefix``."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if _is_blob(path) and name.startswith(prefix) and name != LOCK_BLOB:
                info = self.info(name)
                if info is not None:
                    found.append(info)
        return found

    def writer(self, name: str) -> "LocalBlobWriter":
        """Return a writer that creates ``name`` when committed."""
        return LocalBlobWriter(self._path(name))

    def copy(self, source: str, destination: str) -> BlobInfo:
        """Replace ``destination`` with a hard link (or copy) of ``source`` and its metadata."""
        src, dst = self._path(source), self._path(destination)
        if not src.is_file():
            raise StorageError(
                f"cannot copy {source}: it does not exist in {self.description}"
            )
        source_info = self.info(source)
        temp = _temp_beside(dst)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, temp)
            temp.replace(dst)
            _write_meta(dst, _metadata(source_info))
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(
                f"cannot copy {source} to {destination}: {exc}"
            ) from None
        info = self.info(destination)
        assert info is not None  # noqa: S101  # just written under the store lock
        return info

    @_as_storage_error
    def delete(self, name: str) -> None:
        """Delete a blob and its metadata; a missing blob is not an error."""
        path = self._path(name)
        path.unlink(missing_ok=True)
        _meta_path(path).unlink(missing_ok=True)

    def read(self, name: str) -> Iterator[bytes]:
        """Yield a blob's bytes in chunks."""
        try:
            with self._path(name).open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        except OSError as exc:
            raise StorageError(
                f"cannot read {name} in {self.description}: {exc}"
            ) from None

    @contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold an exclusive lock on ``<root>/locks/writer.lock`` (released if the process dies)."""
        path = self._path(LOCK_BLOB)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {path}: {exc}") from None
        with handle:
            _wait_for_lock(handle, path, timeout)
            try:
                self._sweep_partials()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def location(self, name: str) -> str:
        """Return the blob's path."""
        return str(self._path(name))

    @_as_storage_error
    def _sweep_partials(self) -> None:
        """Remove the temporary files of killed runs; only the lock holder writes."""
        for temp in self.root.rglob(f".*{PARTIAL_SUFFIX}"):
            log.info("removing %s, left by an interrupted run", temp)
            temp.unlink(missing_ok=True)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if any(part in {"", ".", ".."} or part.startswith(".") for part in parts):
            raise StorageError(f"refused blob name {name!r}: not a plain relative name")
        return self.root.joinpath(*parts)

    @staticmethod
    def _read_meta(path: Path) -> dict[str, str]:
        try:
            data = json.loads(_meta_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}


class LocalBlobWriter:
    """Writes a blob to a hidden temporary file, renamed into place on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp = _temp_beside(path)
        self._handle: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        """Append a block to the temporary file."""
        try:
            self._open().write(data)
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot write {self.path}: {exc}") from None

    def reset(self) -> None:
        """Start the temporary file again from byte zero."""
        try:
            handle = self._open()
            handle.seek(0)
            handle.truncate()
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot write {self.path}: {exc}") from None

    def commit(self, version: str, sha256: str) -> None:
        """Flush, rename the file into place, then write its metadata."""
        try:
            handle = self._open()
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            self.temp.replace(self.path)
            _write_meta(self.path, {"version": version, "sha256": sha256})
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot commit {self.path}: {exc}") from None

    def discard(self) -> None:
        """Remove the temporary file; nothing becomes visible."""
        if self._handle is not None:
            self._handle.close()
        self.temp.unlink(missing_ok=True)

    def _open(self) -> IO[bytes]:
        if self._handle is None or self._handle.closed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.temp.open("w+b")
        return self._handle


def _is_blob(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and not path.name.endswith(META_SUFFIX)
    )


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + META_SUFFIX)


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")


def _fingerprint(stat: os.stat_result) -> str:
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def _metadata(info: BlobInfo | None) -> dict[str, str]:
    if info is None or info.version is None or info.sha256 is None:
        return {}
    return {"version": info.version, "sha256": info.sha256}


def _write_meta(path: Path, metadata: dict[str, str]) -> None:
    """Write the metadata of the bytes now at ``path``, with their fingerprint."""
    meta = _meta_path(path)
    temp = _temp_beside(meta)
    record = {**metadata, "fingerprint": _fingerprint(path.stat())}
    try:
        temp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
        temp.replace(meta)
    finally:
        temp.unlink(missing_ok=True)


def _checked_meta(
    path: Path, stat: os.stat_result, meta: dict[str, str]
) -> dict[str, str]:
    """Return ``meta`` if it describes the bytes at ``path`` now, else ``{}``."""
    recorded = meta.get("fingerprint")
    if recorded == _fingerprint(stat) or recorded is None:  # None: an older store
        return meta
    if not meta.get("sha256") or file_sha256(path) != meta["sha256"]:
        log.warning("%s: its metadata describes other bytes; ignoring it", path)
        return {}
    # The bytes are the recorded ones (a copied store): refresh the fingerprint so
    # that they are hashed once, if this reader may write here.
    with contextlib.suppress(OSError):
        _write_meta(path, {k: v for k, v in meta.items() if k != "fingerprint"})
    return meta


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}:
            raise
        shutil.copyfile(src, dst)


def _wait_for_lock(handle: IO[str], path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockError(
                    f"another run holds {path} (waited {timeout:.0f} s); "
                    "try again when it has finished"
                ) from None
            time.sleep(min(1.0, max(0.05, timeout / 20)))
        else:
            return


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
