"""The local folder store: the same layout as the container, under one directory."""

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from m365_update_manager.errors import LockError, StorageError
from m365_update_manager.storage import LOCK_BLOB, BlobInfo

log = logging.getLogger(__name__)

META_SUFFIX = ".metadata.json"
CHUNK = 1024 * 1024


class LocalBlobStore:
    """Blobs as files under ``root``; metadata in a JSON file beside each blob.

    Every write goes through a temporary file in the same folder and a rename, so
    a reader sees the old file or the new one, never a part.
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

    def info(self, name: str) -> BlobInfo | None:
        """Return a blob's size and metadata, or None when it does not exist."""
        path = self._path(name)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        meta = self._read_meta(path)
        return BlobInfo(name, size, meta.get("version"), meta.get("sha256"))

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
        dst.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp_beside(dst)
        try:
            _link_or_copy(src, temp)
            _write_meta(dst, self._read_meta(src))
            temp.replace(dst)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(
                f"cannot copy {source} to {destination}: {exc}"
            ) from None
        info = self.info(destination)
        assert info is not None  # noqa: S101  # just written under the store lock
        return info

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
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as handle:
            _wait_for_lock(handle, path, timeout)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def location(self, name: str) -> str:
        """Return the blob's path."""
        return str(self._path(name))

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
        handle = self._open()
        handle.seek(0)
        handle.truncate()

    def commit(self, version: str, sha256: str) -> None:
        """Flush, write the metadata, then rename the file into place."""
        handle = self._open()
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            _write_meta(self.path, {"version": version, "sha256": sha256})
            self.temp.replace(self.path)
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
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _write_meta(path: Path, metadata: dict[str, str]) -> None:
    meta = _meta_path(path)
    temp = _temp_beside(meta)
    temp.write_text(json.dumps(metadata, sort_keys=True), encoding="utf-8")
    temp.replace(meta)


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
