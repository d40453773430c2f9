"""The blob store the product publishes into, whatever backs it.

Blob names are the product's public layout: ``builds/<app>/<version>/<file>`` holds
each build once; ``staged/``, ``live/`` and ``previous/<app>.pkg`` are aliases made by
server-side copy. Every blob carries ``version`` and ``sha256`` metadata.
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

TIERS = ("staged", "live", "previous")
CONTENT_TYPE = "application/octet-stream"
LOCK_BLOB = "locks/writer.lock"


def tier_blob(tier: str, app: str) -> str:
    """Return the stable alias name of an app's tier, e.g. ``live/word.pkg``."""
    return f"{tier}/{app}.pkg"


def build_blob(app: str, version: str, file_name: str) -> str:
    """Return the immutable name of one build, e.g. ``builds/word/16.1/Word.pkg``."""
    return f"builds/{app}/{version}/{file_name}"


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows of one blob: its size and the metadata the product set."""

    name: str
    size: int
    version: str | None
    sha256: str | None

    def holds(self, version: str, sha256: str, size: int | None = None) -> bool:
        """Return True when the metadata (and size, if given) name this exact build."""
        same_size = size is None or self.size == size
        return self.version == version and self.sha256 == sha256 and same_size


class BlobWriter(Protocol):
    """Receives one blob as consecutive blocks; nothing is visible before ``commit``."""

    def write(self, data: bytes) -> None:
        """Append a block; may return before it is stored, within a bounded window."""

    def reset(self) -> None:
        """Forget every block written so far, to restart from byte zero."""

    def commit(self, version: str, sha256: str) -> None:
        """Make the blob visible with its metadata, all blocks or none."""

    def discard(self) -> None:
        """Abandon the blob; nothing becomes visible."""


class BlobStore(Protocol):
    """The operations the product needs from blob storage."""

    description: str

    def ensure_ready(self) -> None:
        """Create the container or folder when it is missing."""

    def info(self, name: str) -> BlobInfo | None:
        """Return a blob's size and metadata, or None when it does not exist."""

    def list(self, prefix: str) -> list[BlobInfo]:
        """Return every blob whose name starts with ``prefix``."""

    def writer(self, name: str) -> BlobWriter:
        """Return a writer that creates ``name`` when committed."""

    def copy(self, source: str, destination: str) -> BlobInfo:
        """Copy a blob server-side, replacing ``destination`` whole; wait and verify."""

    def delete(self, name: str) -> None:
        """Delete a blob; a missing blob is not an error."""

    def read(self, name: str) -> Iterator[bytes]:
        """Yield a blob's bytes in chunks, for deep verification."""

    def lock(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the store's single writer lock, waiting at most ``timeout`` seconds."""

    def location(self, name: str) -> str:
        """Return where a blob can be fetched, for people to read."""
