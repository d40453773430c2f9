"""AzureBlobStore's copy paths with stand-in clients: pending, failed, block-from-URL."""

from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from m365_update_manager import store_azure
from m365_update_manager.errors import StorageError
from m365_update_manager.store_azure import AzureBlobStore


class FakeBlob:
    """Records calls; answers properties from a script of copy states."""

    def __init__(
        self, name: str, copy_states: list[str] | None = None, from_url: bool = True
    ) -> None:
        self.blob_name = name
        self.url = f"https://acct.blob.core.windows.net/c/{name}"
        self.account_name = "acct"
        self.container_name = "c"
        self.copy_states = copy_states or []
        self.from_url = from_url
        self.calls: list[tuple[str, Any]] = []
        self.size = 600 * 1024 * 1024

    def get_blob_properties(self) -> SimpleNamespace:
        state = self.copy_states.pop(0) if self.copy_states else "success"
        self.calls.append(("props", state))
        return SimpleNamespace(
            size=self.size,
            metadata={"version": "1.0", "sha256": "a" * 64},
            copy=SimpleNamespace(status=state),
        )

    def start_copy_from_url(self, url: str) -> dict[str, str]:
        self.calls.append(("start_copy", url))
        return {"copy_status": self.copy_states.pop(0)}

    def stage_block_from_url(self, block_id: str, url: str, **kwargs: Any) -> None:
        if not self.from_url:
            error = HttpResponseError(message="Current API is not implemented yet.")
            error.error_code = "APINotImplemented"  # type: ignore[attr-defined]  # set by the SDK's parser
            raise error
        self.calls.append(
            ("stage_from_url", (kwargs["source_offset"], kwargs["source_length"]))
        )

    def commit_block_list(self, blocks: list[Any], **kwargs: Any) -> None:
        self.calls.append(("commit", len(blocks)))

    def delete_blob(self) -> None:
        self.calls.append(("delete", None))


class FakeContainer:
    """Hands out the fake blobs by name."""

    container_name = "c"
    url = "https://acct.blob.core.windows.net/c"

    def __init__(self, blobs: dict[str, FakeBlob]) -> None:
        self.blobs = blobs

    def get_blob_client(self, name: str) -> FakeBlob:
        return self.blobs[name]


def _store(blobs: dict[str, FakeBlob]) -> AzureBlobStore:
    credential = SimpleNamespace(account_key="a2V5")
    container: Any = FakeContainer(blobs)
    return AzureBlobStore(
        container, block_size=1024, concurrency=2, credential=credential
    )


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_azure, "COPY_POLL_SECONDS", 0)


def test_copy_stages_blocks_from_url_and_commits_once() -> None:
    source, live = FakeBlob("builds/word/1.0/Word.pkg"), FakeBlob("live/word.pkg")
    store = _store({source.blob_name: source, live.blob_name: live})

    store.copy(source.blob_name, live.blob_name)

    staged = [c for c in live.calls if c[0] == "stage_from_url"]
    assert [offset for offset, _ in (c[1] for c in staged)] == [
        0,
        256 * 1024 * 1024,
        512 * 1024 * 1024,
    ]
    assert sum(length for _, length in (c[1] for c in staged)) == source.size
    assert ("commit", 3) in live.calls
    assert not any(c[0] == "start_copy" for c in live.calls)


def test_copy_blob_reported_pending_is_waited_on_until_success() -> None:
    source = FakeBlob("builds/word/1.0/Word.pkg")
    live = FakeBlob(
        "live/word.pkg",
        ["pending", "pending", "pending", "success", "success"],
        from_url=False,
    )
    store = _store({source.blob_name: source, live.blob_name: live})

    store.copy(source.blob_name, live.blob_name)

    assert [state for name, state in live.calls if name == "props"][:3] == [
        "pending",
        "pending",
        "success",
    ]
    assert ("delete", None) not in source.calls


@pytest.mark.parametrize("outcome", ["failed", "aborted"])
def test_copy_blob_that_fails_is_reported_and_source_kept(outcome: str) -> None:
    source = FakeBlob("builds/word/1.0/Word.pkg")
    live = FakeBlob("live/word.pkg", ["pending", outcome], from_url=False)
    store = _store({source.blob_name: source, live.blob_name: live})

    with pytest.raises(StorageError, match=outcome):
        store.copy(source.blob_name, live.blob_name)

    assert ("delete", None) not in source.calls
