"""Fault injection for the fault suite: storage errors, killed runs, a fake GitHub.

Storage faults are injected where the product meets its storage: the Azure SDK's
``BlobClient`` for Azurite, the file system for the local folder store. A "kill"
is a ``BaseException`` that no ``except Exception`` stops, raised between two
steps; ``python -m tests.support.faults POINT SCRIPT ARGS...`` runs a command in a
process that SIGKILLs itself at ``POINT`` instead, for what only a real kill shows
(no ``finally``, no lock release).
"""

import base64
import errno
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from m365_update_manager.store_azure import AzureBlobStore, AzureBlobWriter
from m365_update_manager.store_local import LocalBlobStore, LocalBlobWriter

Predicate = Callable[..., bool]


class Killed(BaseException):
    """Stands in for SIGKILL: the run stops here, whatever it was doing."""


def kill() -> None:
    """Raise ``Killed``."""
    raise Killed


def always(*_: object, **__: object) -> bool:
    """A predicate that matches every call."""
    return True


def after(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    effect: Callable[[], None],
    when: Predicate = always,
) -> None:
    """Run ``effect`` right after ``owner.name`` returns, for calls ``when`` matches."""
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if when(*args, **kwargs):
            effect()
        return result

    monkeypatch.setattr(owner, name, wrapper)


def before(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    effect: Callable[[], None],
    when: Predicate = always,
    times: int | None = None,
) -> list[int]:
    """Run ``effect`` instead of the first ``times`` calls ``when`` matches (all: None).

    Returns a one-item list counting the calls the effect replaced.
    """
    real = getattr(owner, name)
    hits = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs) and (times is None or hits[0] < times):
            hits[0] += 1
            effect()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return hits


def store_class(store_kind: str) -> type[LocalBlobStore] | type[AzureBlobStore]:
    """Return the class behind a store kind of the ``store_kind`` fixture."""
    return AzureBlobStore if store_kind == "azurite" else LocalBlobStore


def writer_class(store_kind: str) -> type[LocalBlobWriter] | type[AzureBlobWriter]:
    """Return the blob writer class behind a store kind."""
    return AzureBlobWriter if store_kind == "azurite" else LocalBlobWriter


def writer_blob(writer: LocalBlobWriter | AzureBlobWriter) -> str:
    """Return the blob name (or file path) a writer creates."""
    if isinstance(writer, AzureBlobWriter):
        return str(writer.client.blob_name)
    return writer.path.as_posix()


def copy_to(prefix: str) -> Predicate:
    """Match ``store.copy(source, destination)`` calls into ``prefix``."""

    def when(_store: object, _source: str, destination: str) -> bool:
        return destination.startswith(prefix)

    return when


def azure_refusal() -> None:
    """Raise what the SDK raises when the service answers 500 to a call."""
    raise HttpResponseError(message="Operation could not be completed (injected 500)")


def disk_full() -> None:
    """Raise what the file system raises on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@dataclass
class StorageFaults:
    """Storage failures at the product's boundary, for one store kind."""

    monkeypatch: pytest.MonkeyPatch
    store_kind: str

    @property
    def azure(self) -> bool:
        """True for Azurite, False for the local folder store."""
        return self.store_kind == "azurite"

    def fail_block(self, prefix: str = "builds/") -> list[int]:
        """Fail every block written to blobs under ``prefix``."""
        if self.azure:
            return before(
                self.monkeypatch,
                BlobClient,
                "stage_block",
                azure_refusal,
                lambda client, *_a, **_k: client.blob_name.startswith(prefix),
            )
        return self._fill_disk(prefix)

    def fail_commit(self, prefix: str = "builds/") -> list[int]:
        """Fail the commit that would make a new blob under ``prefix`` visible."""
        if self.azure:
            return before(
                self.monkeypatch,
                BlobClient,
                "commit_block_list",
                azure_refusal,
                lambda client, *_a, **_k: client.blob_name.startswith(prefix),
            )
        return self._fail_rename(prefix)

    def fail_copy(self, prefix: str) -> list[int]:
        """Fail every server-side copy into blobs under ``prefix``."""
        if self.azure:
            hits = before(
                self.monkeypatch,
                BlobClient,
                "start_copy_from_url",
                azure_refusal,
                lambda client, *_a, **_k: client.blob_name.startswith(prefix),
            )
            before(
                self.monkeypatch,
                BlobClient,
                "stage_block_from_url",
                azure_refusal,
                lambda client, *_a, **_k: client.blob_name.startswith(prefix),
            )
            return hits
        return self._fail_rename(prefix)

    def _fill_disk(self, prefix: str) -> list[int]:
        """Make the local writer's file writes under ``prefix`` fail (disk full)."""
        real = LocalBlobWriter._open
        hits = [0]

        def full(writer: LocalBlobWriter) -> Any:
            handle = real(writer)
            if f"/{prefix}" not in writer.path.as_posix():
                return handle
            return _FullDisk(handle, hits)

        self.monkeypatch.setattr(LocalBlobWriter, "_open", full)
        return hits

    def _fail_rename(self, prefix: str) -> list[int]:
        """Fail the rename that puts a blob's bytes in place (not its metadata)."""

        def when(_path: Path, target: Path | str) -> bool:
            name = Path(target).as_posix()
            return f"/{prefix}" in name and name.endswith(".pkg")

        return before(self.monkeypatch, Path, "replace", disk_full, when)


class _FullDisk:
    """A file handle on a full disk: every write fails, the rest works."""

    def __init__(self, handle: Any, hits: list[int]) -> None:
        self._handle = handle
        self._hits = hits

    def write(self, _: bytes) -> int:
        self._hits[0] += 1
        disk_full()
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


# --- A fake GitHub: the contents API for manifest.json, labels and issues. ---

API = "https://api.github.com:443/repos/o/r"
Answer = tuple[int, dict[str, str], str]


@dataclass
class FakeGitHub:
    """manifest.json on branch ``main`` of ``o/r`` and its issues, behind ``responses``.

    ``refuse_puts`` answers the next PUTs with (status, message) in turn;
    ``other_writer`` changes the file before the next PUT is answered, as a
    concurrent run would; ``refuse_issues`` answers issue creation with a status.
    """

    text: str | None = None
    sha: int = 0
    refuse_puts: list[tuple[int, str]] = field(default_factory=list)
    other_writer: Callable[[str], str] | None = None
    refuse_issues: int | None = None
    issues: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    puts: list[dict[str, Any]] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)

    def edit(self, change: Callable[[dict[str, Any]], object]) -> None:
        """Edit manifest.json by hand on GitHub, as a person would: a new commit."""
        data = json.loads(self.text or "{}")
        change(data)
        self.text, self.sha = json.dumps(data, indent=2), self.sha + 1

    def install(self, mock: responses.RequestsMock) -> None:
        """Register the routes; every other request to 127.0.0.1 goes through."""
        mock.add_passthru(re.compile(r"http://127\.0\.0\.1[:/]"))
        contents = f"{API}/contents/manifest.json"
        mock.add_callback("GET", API, self._repo)
        mock.add_callback("GET", re.compile(re.escape(contents)), self._get)
        mock.add_callback("PUT", contents, self._put)
        mock.add_callback("GET", re.compile(re.escape(f"{API}/labels")), self._labels)
        mock.add_callback("POST", f"{API}/labels", self._label)
        mock.add_callback("GET", re.compile(re.escape(f"{API}/issues")), self._list)
        mock.add_callback("POST", f"{API}/issues", self._issue)
        mock.add_callback(
            "POST", re.compile(re.escape(f"{API}/issues/") + r"\d+/comments"), self._c
        )

    def _repo(self, _: requests.PreparedRequest) -> Answer:
        return 200, {}, json.dumps({"full_name": "o/r", "default_branch": "main"})

    def _get(self, _: requests.PreparedRequest) -> Answer:
        if self.text is None:
            return 404, {}, json.dumps({"message": "Not Found"})
        answer = {
            "type": "file",
            "name": "manifest.json",
            "path": "manifest.json",
            "encoding": "base64",
            "content": base64.b64encode(self.text.encode()).decode(),
            "sha": f"blob{self.sha}",
        }
        return 200, {}, json.dumps(answer)

    def _put(self, request: requests.PreparedRequest) -> Answer:
        sent = json.loads(request.body or b"{}")
        self.puts.append(sent)
        if self.other_writer is not None and self.text is not None:
            self.text, self.other_writer = self.other_writer(self.text), None
            self.sha += 1
        if self.refuse_puts:
            status, message = self.refuse_puts.pop(0)
            return status, {}, json.dumps({"message": message})
        if sent.get("sha") != (None if self.text is None else f"blob{self.sha}"):
            message = f"manifest.json does not match blob{self.sha}"
            return 409, {}, json.dumps({"message": message})
        self.text = base64.b64decode(sent["content"]).decode()
        self.sha += 1
        content = {"type": "file", "path": "manifest.json", "sha": f"blob{self.sha}"}
        return 200, {}, json.dumps({"content": content, "commit": {"sha": "c0" * 20}})

    def _labels(self, _: requests.PreparedRequest) -> Answer:
        return 200, {}, json.dumps([{"name": name} for name in sorted(self.labels)])

    def _label(self, request: requests.PreparedRequest) -> Answer:
        name = json.loads(request.body or b"{}")["name"]
        self.labels.add(name)
        return 201, {}, json.dumps({"name": name})

    def _list(self, _: requests.PreparedRequest) -> Answer:
        return 200, {}, json.dumps(self.issues)

    def _issue(self, request: requests.PreparedRequest) -> Answer:
        if self.refuse_issues is not None:
            return self.refuse_issues, {}, json.dumps({"message": "Server Error"})
        sent = json.loads(request.body or b"{}")
        number = len(self.issues) + 1
        issue = {
            "number": number,
            "title": sent["title"],
            "body": sent["body"],
            "state": "open",
            "labels": [{"name": name} for name in sent.get("labels", [])],
            "url": f"{API}/issues/{number}",
        }
        self.issues.append(issue)
        return 201, {}, json.dumps(issue)

    def _c(self, request: requests.PreparedRequest) -> Answer:
        body = json.loads(request.body or b"{}")["body"]
        self.comments.append(body)
        return 201, {}, json.dumps({"id": len(self.comments), "body": body})


# --- A real kill: run a command in a process that SIGKILLs itself at a point. ---


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill_point(point: str, azure: bool) -> None:
    """Patch the product so that the process dies at ``point``."""
    store = AzureBlobStore if azure else LocalBlobStore
    writer = AzureBlobWriter if azure else LocalBlobWriter
    patch = pytest.MonkeyPatch()
    if point == "mid-download":
        before(patch, writer, "write", _die, times=None, when=_third_block())
    elif point == "after-build-commit":
        after(patch, writer, "commit", _die, lambda w, *_: "builds/" in writer_blob(w))
    elif point == "after-previous-copy":
        after(patch, store, "copy", _die, copy_to("previous/"))
    else:
        raise SystemExit(f"unknown kill point {point}")


def _third_block() -> Predicate:
    seen = [0]

    def when(*_: object) -> bool:
        seen[0] += 1
        return seen[0] >= 3

    return when


def _main(argv: list[str]) -> int:
    point, script, *args = argv
    _install_kill_point(point, azure="AZURE_STORAGE_CONNECTION_STRING" in os.environ)
    if script == "check":
        from m365_update_manager.cli.check import main
    else:
        from m365_update_manager.cli.promote import main
    return main(args)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
