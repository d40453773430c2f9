"""Azure Blob Storage (and Azurite) behind the ``BlobStore`` protocol."""

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobLeaseClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    generate_blob_sas,
)

from m365_update_manager.errors import LockError, SettingsError, StorageError
from m365_update_manager.net import short_reason
from m365_update_manager.storage import CONTENT_TYPE, LOCK_BLOB, BlobInfo

if TYPE_CHECKING:
    from m365_update_manager.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
LEASE_SECONDS = 60
COPY_BLOCK = (
    256 * 1024 * 1024
)  # Put Block From URL takes up to 4000 MiB; smaller runs in parallel
COPY_POLL_SECONDS = 2.0
COPY_TIMEOUT_SECONDS = 30 * 60
STORAGE_SCOPE = "https://storage.azure.com/.default"


def _reason(exc: BaseException) -> str:
    """Say in one line why Azure failed, and what to check for the usual causes."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) or status == 403:
        return (
            f"Azure refused the credentials ({short_reason(exc)}); check "
            "AZURE_STORAGE_CONNECTION_STRING, or the identity's role on the container"
        )
    if isinstance(exc, ServiceRequestError):
        return (
            "cannot reach the storage endpoint; check AZURE_STORAGE_ACCOUNT_URL or "
            "the connection string's BlobEndpoint, and that the service is running"
        )
    return short_reason(exc)


def _azure_call(what: str, call: Callable[[], T]) -> T:
    """Run one SDK call, turning Azure's exceptions into one ``StorageError`` line."""
    try:
        return call()
    except AzureError as exc:
        raise StorageError(f"{what}: {_reason(exc)}") from None


class AzureBlobStore:
    """One container of an Azure storage account (or of Azurite)."""

    def __init__(
        self,
        container: ContainerClient,
        *,
        block_size: int,
        concurrency: int,
        credential: Any = None,
    ) -> None:
        self.container = container
        self.block_size = block_size
        self.concurrency = concurrency
        self.credential = credential
        self.blocks_from_url = True  # until the service says it lacks the API (Azurite)
        self.description = (
            f"Azure container {container.container_name} at {_bare(container.url)}"
        )

    @classmethod
    def from_settings(cls, settings: "Settings") -> "AzureBlobStore":
        """Connect with a connection string, or with Entra ID to an account URL."""
        # Retries back off from 2 s (not the SDK's 15 s): a dead endpoint fails fast.
        options: dict[str, Any] = {
            "connection_timeout": 20,
            "read_timeout": 120,
            "initial_backoff": 2,
            "increment_base": 2,
        }
        credential: Any
        try:
            if settings.connection_string is not None:
                raw = settings.connection_string.get_secret_value()
                service = BlobServiceClient.from_connection_string(raw, **options)
                credential = service.credential
            else:
                from azure.identity import DefaultAzureCredential  # noqa: PLC0415  # only for Entra ID

                credential = DefaultAzureCredential()
                service = BlobServiceClient(
                    str(settings.account_url), credential, **options
                )
        except (ValueError, AzureError) as exc:
            raise SettingsError(
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL is "
                f"malformed ({type(exc).__name__}); copy it again from the portal"
            ) from None
        container = service.get_container_client(settings.container)
        return cls(
            container,
            block_size=settings.block_size,
            concurrency=settings.upload_concurrency,
            credential=credential,
        )

    def ensure_ready(self) -> None:
        """Create the container when it is missing."""
        try:
            self.container.create_container()
        except ResourceExistsError:
            return
        except AzureError as exc:
            raise StorageError(
                f"cannot create or reach {self.description}: {_reason(exc)}"
            ) from None

    def info(self, name: str) -> BlobInfo | None:
        """Return a blob's size and metadata, or None when it does not exist."""
        client = self.container.get_blob_client(name)
        try:
            props = client.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageError(f"cannot read {name}: {_reason(exc)}") from None
        meta = props.metadata or {}
        return BlobInfo(name, int(props.size), meta.get("version"), meta.get("sha256"))

    def list(self, prefix: str) -> list[BlobInfo]:
        """Return every blob whose name starts with ``prefix``."""

        def listing() -> list[BlobInfo]:
            blobs = self.container.list_blobs(
                name_starts_with=prefix, include=["metadata"]
            )
            return [
                BlobInfo(
                    b.name,
                    int(b.size),
                    (b.metadata or {}).get("version"),
                    (b.metadata or {}).get("sha256"),
                )
                for b in blobs
                if b.name != LOCK_BLOB
            ]

        return _azure_call(f"cannot list {prefix}* in {self.description}", listing)

    def writer(self, name: str) -> "AzureBlobWriter":
        """Return a writer that stages blocks and commits them as one blob."""
        return AzureBlobWriter(self.container.get_blob_client(name), self.concurrency)

    def copy(self, source: str, destination: str) -> BlobInfo:
        """Replace ``destination`` with ``source`` server-side, atomically for readers.

        A pending Copy Blob into an existing blob exposes partial content to readers,
        so blocks are staged from the source URL and committed in one step. Where the
        service lacks Put Block From URL (Azurite), Copy Blob is used and waited on.
        """
        src = self.container.get_blob_client(source)
        dst = self.container.get_blob_client(destination)
        props = _azure_call(
            f"cannot copy {source}: cannot read it", src.get_blob_properties
        )
        try:
            if self.blocks_from_url:
                self._copy_by_blocks(
                    src, dst, int(props.size), dict(props.metadata or {})
                )
            else:
                self._copy_and_wait(src, dst, source, destination)
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != "APINotImplemented":
                raise StorageError(
                    f"cannot copy {source} to {destination}: {_reason(exc)}"
                ) from None
            log.debug("Put Block From URL not implemented here; using Copy Blob")
            self.blocks_from_url = False
            self._copy_and_wait(src, dst, source, destination)
        except AzureError as exc:
            raise StorageError(
                f"cannot copy {source} to {destination}: {_reason(exc)}"
            ) from None
        info = self.info(destination)
        if info is None or info.size != int(props.size):
            raise StorageError(
                f"copy of {source} to {destination} did not arrive whole"
            )
        return info

    def _copy_by_blocks(
        self, src: BlobClient, dst: BlobClient, size: int, metadata: dict[str, str]
    ) -> None:
        source_url, auth = self._source_access(src)
        prefix = uuid.uuid4().hex[:8]
        ranges = [
            (offset, min(COPY_BLOCK, size - offset))
            for offset in range(0, size, COPY_BLOCK)
        ]
        ids = [_block_id(prefix, index) for index in range(len(ranges))]

        def stage(index: int) -> None:
            offset, length = ranges[index]
            dst.stage_block_from_url(
                ids[index],
                source_url,
                source_offset=offset,
                source_length=length,
                source_authorization=auth,
            )

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(stage, range(len(ranges))))
        dst.commit_block_list(
            [BlobBlock(block_id) for block_id in ids],
            metadata=metadata,
            content_settings=ContentSettings(content_type=CONTENT_TYPE),
        )

    def _copy_and_wait(
        self, src: BlobClient, dst: BlobClient, source: str, destination: str
    ) -> None:
        copy = _azure_call(
            f"cannot copy {source} to {destination}",
            lambda: dst.start_copy_from_url(src.url),
        )
        status = copy.get("copy_status")
        deadline = time.monotonic() + COPY_TIMEOUT_SECONDS
        while status == "pending":
            if time.monotonic() > deadline:
                raise StorageError(
                    f"copy of {source} to {destination} still pending after {COPY_TIMEOUT_SECONDS} s"
                )
            time.sleep(COPY_POLL_SECONDS)
            props = _azure_call(
                f"cannot follow the copy to {destination}", dst.get_blob_properties
            )
            status = props.copy.status
        if status != "success":
            raise StorageError(
                f"copy of {source} to {destination} ended {status}; the source is kept"
            )

    def _source_access(self, src: BlobClient) -> tuple[str, str | None]:
        key = getattr(self.credential, "account_key", None)
        if key:
            sas = generate_blob_sas(
                str(src.account_name),
                src.container_name,
                src.blob_name,
                account_key=key,
                permission=BlobSasPermissions(read=True),
                expiry=datetime.now(UTC) + timedelta(hours=2),
            )
            return f"{src.url}?{sas}", None
        if hasattr(self.credential, "get_token"):
            token = self.credential.get_token(STORAGE_SCOPE).token
            return src.url, f"Bearer {token}"
        return src.url, None

    def delete(self, name: str) -> None:
        """Delete a blob; a missing blob is not an error."""
        try:
            self.container.delete_blob(name)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise StorageError(f"cannot delete {name}: {_reason(exc)}") from None

    def read(self, name: str) -> Iterator[bytes]:
        """Yield a blob's bytes in chunks."""
        client = self.container.get_blob_client(name)
        downloader = _azure_call(
            f"cannot read {name}", lambda: client.download_blob(max_concurrency=2)
        )
        try:
            yield from downloader.chunks()
        except AzureError as exc:
            raise StorageError(f"cannot read {name}: {_reason(exc)}") from None

    @contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold a lease on the lock blob, renewed in the background until released."""
        blob = self.container.get_blob_client(LOCK_BLOB)
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageError(f"cannot create {LOCK_BLOB}: {_reason(exc)}") from None
        lease = _acquire_lease(blob, timeout)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(lease, stop), daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                lease.release()
            except AzureError as exc:
                log.warning(
                    "could not release the lock lease (%s); it expires in %d s",
                    _reason(exc),
                    LEASE_SECONDS,
                )

    def location(self, name: str) -> str:
        """Return the blob's URL (without any credential)."""
        return _bare(self.container.get_blob_client(name).url)


def _acquire_lease(blob: BlobClient, timeout: float) -> BlobLeaseClient:
    deadline = time.monotonic() + timeout
    while True:
        lease = BlobLeaseClient(blob)
        try:
            lease.acquire(lease_duration=LEASE_SECONDS)
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise StorageError(
                    f"cannot take the lock {LOCK_BLOB}: {_reason(exc)}"
                ) from None
            if time.monotonic() >= deadline:
                raise LockError(
                    f"another run holds the lease on {LOCK_BLOB} (waited {timeout:.0f} s); "
                    "try again when it has finished"
                ) from None
            time.sleep(min(2.0, max(0.05, timeout / 20)))
        except AzureError as exc:
            raise StorageError(
                f"cannot take the lock {LOCK_BLOB}: {_reason(exc)}"
            ) from None
        else:
            return lease


def _renew(lease: BlobLeaseClient, stop: threading.Event) -> None:
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            lease.renew()
        except AzureError as exc:
            log.warning("could not renew the lock lease: %s", _reason(exc))


def _bare(url: str) -> str:
    """Return a URL without its query: a SAS connection string puts the token there."""
    return url.split("?", 1)[0]


def _block_id(prefix: str, index: int) -> str:
    return base64.b64encode(f"{prefix}-{index:06d}".encode()).decode()


class AzureBlobWriter:
    """Stages blocks in parallel (a bounded window) and commits them as one blob."""

    def __init__(self, client: BlobClient, concurrency: int) -> None:
        self.client = client
        self.window = threading.BoundedSemaphore(concurrency + 1)
        self.pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="stage"
        )
        self.prefix = uuid.uuid4().hex[:8]
        self.block_ids: list[str] = []
        self.pending: list[Future[None]] = []

    def write(self, data: bytes) -> None:
        """Stage ``data`` as the next block, waiting while the window is full."""
        self._raise_failed()
        self.window.acquire()
        block_id = _block_id(self.prefix, len(self.block_ids))
        self.block_ids.append(block_id)
        future = self.pool.submit(self._stage, block_id, data)
        self.pending.append(future)

    def _stage(self, block_id: str, data: bytes) -> None:
        try:
            self.client.stage_block(block_id, data, length=len(data))
        finally:
            self.window.release()

    def reset(self) -> None:
        """Forget every staged block; the service discards uncommitted blocks."""
        self._wait()
        self.prefix = uuid.uuid4().hex[:8]
        self.block_ids = []

    def commit(self, version: str, sha256: str) -> None:
        """Commit the staged blocks with metadata and content type, in one request."""
        try:
            self._wait()
            self.client.commit_block_list(
                [BlobBlock(block_id) for block_id in self.block_ids],
                metadata={"version": version, "sha256": sha256},
                content_settings=ContentSettings(content_type=CONTENT_TYPE),
            )
        except AzureError as exc:
            raise StorageError(
                f"cannot commit {self.client.blob_name}: {_reason(exc)}"
            ) from None
        finally:
            self.pool.shutdown(wait=True)

    def discard(self) -> None:
        """Stop staging; uncommitted blocks stay invisible and the service drops them."""
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _wait(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            try:
                future.result()
            except AzureError as exc:
                raise StorageError(
                    f"cannot stage a block of {self.client.blob_name}: {_reason(exc)}"
                ) from None

    def _raise_failed(self) -> None:
        done = [f for f in self.pending if f.done()]
        self.pending = [f for f in self.pending if not f.done()]
        for future in done:
            exc = future.exception()
            if isinstance(exc, AzureError):
                raise StorageError(
                    f"cannot stage a block of {self.client.blob_name}: {_reason(exc)}"
                ) from None
            if exc is not None:
                raise exc
