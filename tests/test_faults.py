"""Faults and hostile input end to end: nothing lost, nothing unverified published.

Each scenario runs the real commands (``main([...])``) against the local CDN and a
store (the local folder, and Azurite where the store matters), injects one fault,
and ends with the verification ``promote.py --verify --deep`` runs.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import responses
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.storage.blob import (
    AccountSasPermissions,
    BlobClient,
    BlobLeaseClient,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from m365_update_manager.audit import AuditReport, audit
from m365_update_manager.cli.check import main as check
from m365_update_manager.cli.promote import main as promote
from m365_update_manager.manifest import ManifestFile, parse_manifest_text
from m365_update_manager.runtime import Runtime, open_store
from m365_update_manager.settings import load_settings
from m365_update_manager.storage import LOCK_BLOB, BlobStore
from m365_update_manager.store_azure import AzureBlobStore
from tests.conftest import Feeds, Package, package_body
from tests.support.azurite import ACCOUNT, KEY, Azurite
from tests.support.cdn import (
    Fault,
    anonymous,
    cut_after,
    declare,
    delay,
    redirect,
    serve,
    status,
    unsized,
)
from tests.support.faults import (
    FakeGitHub,
    Killed,
    StorageFaults,
    after,
    before,
    copy_to,
    kill,
    store_class,
    writer_blob,
    writer_class,
)

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)
TWO_APPS = ["--app", "word", "--app", "mau"]
APP_IDS = {"word": "MSWD2019", "mau": "MSau04"}
V2 = "16.113.26090110"
V3 = "16.114.26091510"
TOKEN = "ghp_FaultSuiteToken0123456789abcdefABCD"


# --- helpers ---


def _store() -> BlobStore:
    return open_store(load_settings())


def _manifest_text(tmp_path: Path) -> str:
    return (tmp_path / "manifest.json").read_text()


def _state(tmp_path: Path, app: str = "word") -> dict[str, Any]:
    apps: dict[str, Any] = json.loads(_manifest_text(tmp_path))["apps"]
    return dict(apps[app])


def _tiers(tmp_path: Path, app: str = "word") -> tuple[str | None, ...]:
    state = _state(tmp_path, app)
    return tuple(
        None if state[tier] is None else state[tier]["version"]
        for tier in ("staged", "live", "previous")
    )


def _audit(tmp_path: Path) -> AuditReport:
    manifest = ManifestFile(tmp_path / "manifest.json").load()
    return audit(_store(), manifest, deep=True)


def _verified(tmp_path: Path) -> None:
    """The verification every scenario ends with: no problem, no orphan, exit 0."""
    report = _audit(tmp_path)
    assert report.problems == []
    assert report.orphans == []
    assert promote(["--verify", "--deep"]) == 0


def _blobs() -> dict[str, tuple[str | None, str | None]]:
    return {
        info.name: (info.version, info.sha256)
        for prefix in ("builds/", "staged/", "live/", "previous/")
        for info in _store().list(prefix)
    }


def _downloads(feeds: Feeds) -> list[str]:
    """Return the package requests the CDN saw (feeds excluded)."""
    return [path for path in feeds.cdn.state.requests if path.endswith(".pkg")]


def _at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setenv("M365_NOW", moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def publish(feeds: Feeds, app: str, old: str, new: str, body: bytes) -> Package:
    """Make the local feed offer build ``new`` of ``app`` instead of ``old``."""
    for suffix in (".xml", "-chk.xml"):
        path = feeds.feed_path(APP_IDS[app], suffix)
        text = feeds.cdn.state.files[path]
        feeds.cdn.add(path, text.replace(old.encode(), new.encode()))
    first = feeds.packages[app]
    package = Package(app, new, first.path.replace(first.version, new), body)
    feeds.cdn.add(package.path, body)
    return package


def _promotable(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Package:
    """Return word's V2, staged and aged, with V1 live: a promotion is due."""
    v1 = feeds.packages["word"].version
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=14))
    assert promote([]) == 0
    v2 = publish(feeds, "word", v1, V2, package_body("word-v2", 120_000))
    _at(monkeypatch, T0 + timedelta(days=15))
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=30))
    assert _tiers(tmp_path) == (V2, v1, None)
    return v2


# --- promise 1: only whole, unspliced, consistent packages become visible ---


def test_cdn_closing_mid_package_every_try_leaves_no_blob_and_stages_the_other(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    word = feeds.packages["word"]
    feeds.cdn.fault(word.path, *[cut_after(50_000)] * 10)

    assert check(TWO_APPS) == 1

    assert _store().list("builds/word/") == []
    assert _store().info("staged/word.pkg") is None
    assert "word" not in json.loads(_manifest_text(tmp_path))["apps"]
    assert _tiers(tmp_path, "mau")[0] == feeds.packages["mau"].version
    _verified(tmp_path)
    feeds.cdn.state.faults.clear()
    assert check(TWO_APPS) == 0
    assert b"".join(_store().read("staged/word.pkg")) == word.body
    _verified(tmp_path)


@pytest.mark.parametrize("code", [500, 503, 429], ids=["500", "503", "429"])
@pytest.mark.parametrize(
    ("times", "outcome"), [(1, 0), (10, 1)], ids=["once", "every-try"]
)
def test_cdn_error_status_is_retried_then_fails_the_app_alone(
    feeds: Feeds, tmp_path: Path, code: int, times: int, outcome: int
) -> None:
    word = feeds.packages["word"]
    feeds.cdn.fault(word.path, *[status(code)] * times)

    assert check(TWO_APPS) == outcome

    staged = _store().info("staged/word.pkg")
    assert (staged is not None) is (outcome == 0)
    assert staged is None or staged.sha256 == word.sha256
    assert _tiers(tmp_path, "mau")[0] == feeds.packages["mau"].version
    _verified(tmp_path)


def test_cdn_sending_fewer_bytes_than_content_length_restarts_and_stages_whole(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    word = feeds.packages["word"]
    feeds.cdn.fault(word.path, declare(len(word.body) + 1000))

    assert check(["--app", "word"]) == 0

    assert b"".join(_store().read("staged/word.pkg")) == word.body
    _verified(tmp_path)


def test_cdn_sending_more_bytes_than_content_length_stores_only_declared_bytes(
    feeds: Feeds, tmp_path: Path
) -> None:
    # An HTTP/1.1 client reads Content-Length bytes and no more: the blob holds
    # exactly what the server declared, verified against its own SHA-256.
    word = feeds.packages["word"]
    declared = len(word.body) - 1000
    feeds.cdn.fault(word.path, declare(declared))

    assert check(["--app", "word"]) == 0

    stored = b"".join(_store().read("staged/word.pkg"))
    assert stored == word.body[:declared]
    assert _state(tmp_path)["staged"]["sha256"] == hashlib.sha256(stored).hexdigest()
    _verified(tmp_path)


RESUME_CASES: dict[str, tuple[str | None, Callable[[bytes], list[Fault]]]] = {
    # The file changed between the tries and says so with a new ETag.
    "new-etag": ('"v1"', lambda other: [cut_after(70_000), serve(other, '"v2"')]),
    # No validator at all: nothing can tell the second file from the first.
    "no-etag": (None, lambda other: [anonymous(limit=70_000), anonymous(other)]),
    # A weak ETag promises equivalent content, not the same bytes (RFC 9110 8.8.1).
    "weak-etag": ('W/"v1"', lambda other: [cut_after(70_000), serve(other)]),
}


@pytest.mark.parametrize("case", list(RESUME_CASES), ids=list(RESUME_CASES))
def test_resume_onto_a_different_file_restarts_from_zero_never_splices(
    feeds: Feeds, store_kind: str, tmp_path: Path, case: str
) -> None:
    word = feeds.packages["word"]
    other = package_body("another file", len(word.body))
    etag, faults = RESUME_CASES[case]
    if etag is not None:
        feeds.cdn.state.etags[word.path] = etag
    feeds.cdn.fault(word.path, *faults(other))

    assert check(["--app", "word"]) == 0

    stored = b"".join(_store().read("staged/word.pkg"))
    assert stored == other, "a resume must not splice two files"
    _verified(tmp_path)


def _lose_superseded_build(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """Stage V1 then V2, delete V1's build blob, and point the feed back at V1."""
    v1 = feeds.packages["word"].version
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    publish(feeds, "word", v1, V2, package_body("word-v2", 120_000))
    _at(monkeypatch, T0 + timedelta(days=1))
    assert check(["--app", "word"]) == 0
    lost = next(b["blob"] for b in _state(tmp_path)["builds"] if b["version"] == v1)
    _store().delete(lost)
    publish(feeds, "word", V2, v1, feeds.packages["word"].body)
    _at(monkeypatch, T0 + timedelta(days=2))
    return str(lost)


@pytest.mark.parametrize("fault", ["other-bytes", "declared-short"])
def test_bytes_unlike_the_earlier_download_of_a_build_never_become_visible(
    feeds: Feeds,
    store_kind: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault: str,
) -> None:
    word = feeds.packages["word"]
    lost = _lose_superseded_build(feeds, monkeypatch, tmp_path)
    before_run = _manifest_text(tmp_path)
    size = len(word.body)
    impostor = serve(package_body("impostor", size))
    feeds.cdn.fault(
        word.path, impostor if fault == "other-bytes" else declare(size - 1)
    )

    assert check(["--app", "word"]) == 1

    assert _store().info(lost) is None
    assert _manifest_text(tmp_path) == before_run
    assert _audit(tmp_path).problems == [
        f"{lost}: missing (should hold {word.version})"
    ]
    assert check(["--app", "word"]) == 0, "the true bytes restore the lost build"
    assert b"".join(_store().read(lost)) == word.body
    _verified(tmp_path)


# --- promise 2: storage and manifest.json agree after every run, killed or not ---


@pytest.mark.parametrize("fault", ["block", "commit"])
def test_storage_failing_a_build_upload_fails_that_app_alone_and_shows_nothing(
    feeds: Feeds, store_kind: str, tmp_path: Path, fault: str
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        faults = StorageFaults(patch, store_kind)
        fail = faults.fail_block if fault == "block" else faults.fail_commit
        hits = fail("builds/word/")

        assert check(TWO_APPS) == 1

    assert hits[0] >= 1
    assert [name for name in _blobs() if "word" in name] == []
    assert "word" not in json.loads(_manifest_text(tmp_path))["apps"]
    assert _tiers(tmp_path, "mau")[0] == feeds.packages["mau"].version
    _verified(tmp_path)
    assert check(TWO_APPS) == 0
    assert b"".join(_store().read("staged/word.pkg")) == feeds.packages["word"].body
    _verified(tmp_path)


def test_storage_failing_the_copy_to_staged_keeps_the_verified_build_for_next_run(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        StorageFaults(patch, store_kind).fail_copy("staged/word")

        assert check(TWO_APPS) == 1

    report = _audit(tmp_path)
    assert report.problems == []
    assert [orphan.split("/")[1] for orphan in report.orphans] == ["word"]
    feeds.cdn.reset_counters()
    assert check(TWO_APPS) == 0
    assert _downloads(feeds) == [], "the verified build in storage is adopted"
    assert b"".join(_store().read("staged/word.pkg")) == feeds.packages["word"].body
    _verified(tmp_path)


def test_storage_failing_the_copy_to_live_leaves_storage_as_recorded(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = _promotable(feeds, monkeypatch, tmp_path)
    recorded = _manifest_text(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        StorageFaults(patch, store_kind).fail_copy("live/")

        assert promote([]) == 1

    assert _manifest_text(tmp_path) == recorded
    report = _audit(tmp_path)
    assert (report.problems, report.orphans) == ([], [])
    assert promote([]) == 0
    assert _tiers(tmp_path) == (None, v2.version, v1)
    _verified(tmp_path)


KILL_POINTS = ["after-build-commit", "after-staged-copy", "before-manifest-write"]


def _kill_check_at(point: str, store_kind: str, patch: pytest.MonkeyPatch) -> None:
    if point == "after-build-commit":
        writer = writer_class(store_kind)
        after(patch, writer, "commit", kill, lambda w, *_: "builds/" in writer_blob(w))
    elif point == "after-staged-copy":
        after(patch, store_class(store_kind), "copy", kill, copy_to("staged/word"))
    else:
        before(patch, Runtime, "save", kill)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_run_killed_between_blob_commit_and_manifest_write_is_repaired_next_run(
    feeds: Feeds, store_kind: str, tmp_path: Path, point: str
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        _kill_check_at(point, store_kind, patch)

        with pytest.raises(Killed):
            check(TWO_APPS)

    feeds.cdn.reset_counters()
    assert check(TWO_APPS) == 0
    assert feeds.packages["word"].path not in _downloads(feeds), "no second download"
    assert b"".join(_store().read("staged/word.pkg")) == feeds.packages["word"].body
    _verified(tmp_path)


def test_promotion_killed_between_its_two_copies_is_repaired_next_run(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = _promotable(feeds, monkeypatch, tmp_path)
    recorded = _manifest_text(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        after(patch, store_class(store_kind), "copy", kill, copy_to("previous/"))

        with pytest.raises(Killed):
            promote([])

    assert _manifest_text(tmp_path) == recorded
    assert promote([]) == 0
    assert _tiers(tmp_path) == (None, v2.version, v1)
    assert b"".join(_store().read("live/word.pkg")) == v2.body
    _verified(tmp_path)


def test_promotion_killed_before_dropping_old_builds_leaves_no_orphan_next_run(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = _promotable(feeds, monkeypatch, tmp_path)
    assert promote([]) == 0
    publish(feeds, "word", V2, V3, package_body("word-v3", 120_000))
    _at(monkeypatch, T0 + timedelta(days=31))
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=46))
    with pytest.MonkeyPatch.context() as patch:
        old = before(patch, store_class(store_kind), "delete", kill, _build_blob)

        with pytest.raises(Killed):
            promote([])

    assert old[0] == 1
    assert promote([]) == 0
    assert _tiers(tmp_path) == (None, V3, v2.version)
    assert v1 not in json.dumps(_state(tmp_path)["builds"])
    _verified(tmp_path)


def _build_blob(_store: object, name: str) -> bool:
    return name.startswith("builds/")


# --- a real kill (SIGKILL): no finally, no lock release ---


def _run_killed(point: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.support.faults", point, *args]
    return subprocess.run(  # noqa: PLW1510  # the caller checks the signal
        command, env=env, capture_output=True, text=True, timeout=60
    )


def test_sigkill_mid_download_leaves_no_temporary_file_after_next_run(
    feeds: Feeds, tmp_path: Path
) -> None:
    killed = _run_killed("mid-download", "check", *TWO_APPS)
    assert killed.returncode == -9, killed.stderr
    assert list((tmp_path / "blobstore").rglob("*.partial")) != []

    assert check(TWO_APPS) == 0

    assert list((tmp_path / "blobstore").rglob("*.partial")) == []
    _verified(tmp_path)


def test_sigkill_after_the_build_commit_is_repaired_once_the_lock_is_free(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    killed = _run_killed("after-build-commit", "check", *TWO_APPS)
    assert killed.returncode == -9, killed.stderr
    if store_kind == "azurite":
        # The killed run's lease outlives it by up to 60 s: a writer meanwhile
        # waits M365_LOCK_TIMEOUT and fails clearly. Break it to stand for expiry.
        assert check(TWO_APPS) == 1
        settings = load_settings()
        assert settings.connection_string is not None
        service = BlobServiceClient.from_connection_string(
            settings.connection_string.get_secret_value()
        )
        blob = service.get_container_client(settings.container).get_blob_client(
            LOCK_BLOB
        )
        BlobLeaseClient(blob).break_lease(lease_break_period=0)
    feeds.cdn.reset_counters()

    assert check(TWO_APPS) == 0

    assert feeds.packages["word"].path not in _downloads(feeds)
    _verified(tmp_path)


def test_sigkill_between_the_two_copies_of_a_promotion_is_repaired_next_run(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = _promotable(feeds, monkeypatch, tmp_path)

    killed = _run_killed("after-previous-copy", "promote")
    assert killed.returncode == -9, killed.stderr
    assert promote([]) == 0

    assert _tiers(tmp_path) == (None, v2.version, v1)
    _verified(tmp_path)


# --- promise 3: GitHub refuses; the storage work is kept, the exit code is 1 ---


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """A fake GitHub repository o/r, branch main, the state in manifest.json."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    fake = FakeGitHub()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.install(mock)
        yield fake


def _recorded(github: FakeGitHub) -> dict[str, Any]:
    assert github.text is not None
    recorded: dict[str, Any] = json.loads(github.text)
    return recorded


def _verified_against(github: FakeGitHub) -> None:
    report = audit(
        _store(), parse_manifest_text(github.text or "", "GitHub"), deep=True
    )
    assert (report.problems, report.orphans) == ([], [])


def test_github_stale_sha_merges_the_other_writers_change_and_commits(
    feeds: Feeds, github: FakeGitHub, tmp_path: Path
) -> None:
    assert check(TWO_APPS) == 0
    v1 = feeds.packages["word"].version
    publish(feeds, "word", v1, V2, package_body("word-v2", 120_000))

    def hold_mau(text: str) -> str:
        data = json.loads(text)
        data["apps"]["mau"]["hold"] = {
            "reason": "bad build",
            "since": "2026-09-01T00:00:00Z",
        }
        return json.dumps(data)

    github.other_writer = hold_mau

    assert check(["--app", "word"]) == 0

    recorded = _recorded(github)
    assert len(github.puts) == 3, "create, refused as stale, merged"
    assert recorded["apps"]["word"]["staged"]["version"] == V2
    assert recorded["apps"]["mau"]["hold"]["reason"] == "bad build"
    _verified_against(github)


@pytest.mark.parametrize(
    "refusal",
    [(502, "Server Error"), (403, "Resource not accessible by integration")],
    ids=["5xx", "403"],
)
def test_github_refusing_the_commit_keeps_storage_work_and_exits_1(
    feeds: Feeds, github: FakeGitHub, tmp_path: Path, refusal: tuple[int, str]
) -> None:
    assert check(TWO_APPS) == 0
    v1 = feeds.packages["word"].version
    publish(feeds, "word", v1, V2, package_body("word-v2", 120_000))
    github.refuse_puts = [refusal] * 5

    assert check(TWO_APPS) == 1

    assert _recorded(github)["apps"]["word"]["staged"]["version"] == v1
    assert _tiers(tmp_path, "word")[0] == V2, "the local file records the work"
    _verified(tmp_path)
    github.refuse_puts = []
    feeds.cdn.reset_counters()
    assert check(TWO_APPS) == 0
    assert _downloads(feeds) == [], "the next run commits what storage holds"
    assert _recorded(github)["apps"]["word"]["staged"]["version"] == V2
    _verified_against(github)


def test_github_refusing_the_issue_keeps_the_state_and_exits_1(
    feeds: Feeds, github: FakeGitHub, tmp_path: Path
) -> None:
    github.refuse_issues = 500

    assert check(TWO_APPS) == 1

    assert _recorded(github)["apps"]["word"]["staged"] is not None
    assert github.issues == []
    _verified_against(github)


# --- promise 4: hostile or broken input, one line naming the source, no change ---

EVIL = "https://evil.example.com/x/Microsoft_Word_16.113.26090110_Updater.pkg"
ENTITY_CHK = b"""<?xml version="1.0"?>
<!DOCTYPE plist [<!ENTITY v "16.999.1">]>
<plist version="1.0"><dict><key>Update Version</key><string>&v;</string></dict></plist>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE plist [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<plist version="1.0"><array><dict><key>Title</key><string>&x;</string></dict></array></plist>
"""
ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<plist version="1.0"><array><dict><key>Title</key><string>&d;</string></dict></array></plist>
"""


def _offer(feeds: Feeds, manifest: bytes | None = None) -> Package:
    """Make word's feed offer V2; with ``manifest``, serve that as its manifest."""
    word = feeds.packages["word"]
    v2 = publish(feeds, "word", word.version, V2, package_body("word-v2", 120_000))
    if manifest is not None:
        feeds.cdn.add(feeds.feed_path("MSWD2019"), manifest)
    return v2


def _rewritten(feeds: Feeds, old: str, new: str) -> bytes:
    """Return word's manifest, offering V2, with ``old`` replaced by ``new``."""
    _offer(feeds)
    text = feeds.cdn.state.files[feeds.feed_path("MSWD2019")]
    return text.replace(old.encode(), new.encode())


def _hostile(case: str, feeds: Feeds, monkeypatch: pytest.MonkeyPatch) -> None:
    updater = f"Microsoft_Word_{V2}_Updater.pkg"
    if case == "entity-declaration":
        feeds.cdn.add(feeds.feed_path("MSWD2019", "-chk.xml"), ENTITY_CHK)
    elif case in {"external-entity", "entity-bomb", "malformed-xml"}:
        bodies = {
            "external-entity": EXTERNAL_ENTITY,
            "entity-bomb": ENTITY_BOMB,
            "malformed-xml": b"<?xml version='1.0'?><plist><array><dict><key>",
        }
        _offer(feeds, bodies[case])
    elif case == "delta-as-full-package":
        delta = f"Microsoft_Word_{feeds.packages['word'].version}_to_{V2}_Delta.pkg"
        _offer(feeds, _rewritten(feeds, updater, delta))
    elif case == "not-a-package-url":
        _offer(feeds, _rewritten(feeds, updater, "index.html"))
    elif case == "host-outside-allowed":
        _offer(feeds, _rewritten(feeds, feeds.cdn.base, "https://evil.example.com"))
    elif case == "plain-http-outside-loopback":
        monkeypatch.setenv("M365_ALLOWED_HOSTS", "127.0.0.1,mirror.example.com")
        _offer(feeds, _rewritten(feeds, feeds.cdn.base, "http://mirror.example.com"))
    elif case == "redirect-outside-allowed":
        feeds.cdn.fault(_offer(feeds).path, redirect(EVIL))
    elif case == "redirect-to-plain-http":
        monkeypatch.setenv("M365_ALLOWED_HOSTS", "127.0.0.1,evil.example.com")
        feeds.cdn.fault(_offer(feeds).path, redirect(EVIL.replace("https", "http")))
    elif case == "feed-redirect-outside-allowed":
        feeds.cdn.fault(feeds.feed_path("MSWD2019", "-chk.xml"), redirect(EVIL))
    elif case == "over-the-size-ceiling":
        monkeypatch.setenv("M365_MAX_PACKAGE_BYTES", "100000")
        _offer(feeds)
    elif case == "no-content-length":
        feeds.cdn.fault(_offer(feeds).path, unsized())


HOSTILE = {
    "entity-declaration": "0409MSWD2019-chk.xml",
    "external-entity": "0409MSWD2019.xml",
    "entity-bomb": "0409MSWD2019.xml",
    "malformed-xml": "0409MSWD2019.xml",
    "delta-as-full-package": "Delta.pkg",
    "not-a-package-url": "index.html",
    "host-outside-allowed": "evil.example.com",
    "plain-http-outside-loopback": "mirror.example.com",
    "redirect-outside-allowed": "evil.example.com",
    "redirect-to-plain-http": "evil.example.com",
    "feed-redirect-outside-allowed": "evil.example.com",
    "over-the-size-ceiling": "M365_MAX_PACKAGE_BYTES",
    "no-content-length": "Content-Length",
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_feed_or_package_gets_one_error_line_and_changes_nothing(
    feeds: Feeds,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: str,
) -> None:
    assert check(TWO_APPS) == 0
    recorded, stored = _manifest_text(tmp_path), _blobs()
    _hostile(case, feeds, monkeypatch)
    capsys.readouterr()

    assert check(TWO_APPS) == 1

    errors = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("ERROR")
    ]
    assert len(errors) == 1, errors
    assert errors[0].startswith("ERROR word: ")
    assert HOSTILE[case] in errors[0]
    assert _manifest_text(tmp_path) == recorded
    assert _blobs() == stored
    _verified(tmp_path)


def test_package_far_from_the_feed_size_hint_is_staged_with_a_warning(
    feeds: Feeds, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert check(["--app", "mau"]) == 0

    warning = [line for line in capsys.readouterr().err.splitlines() if "hint" in line]
    assert warning[0].startswith("WARNING ")
    assert "Microsoft_AutoUpdate_4.85.26080216_Updater.pkg" in warning[0]
    _verified(tmp_path)


BAD_MANIFESTS = {
    "broken-json": '{"schema_version": 2, "apps": {',
    "unknown-schema": '{"schema_version": 3, "apps": {}}',
    "path-like-app-name": json.dumps(
        {
            "schema_version": 2,
            "apps": {"../x": {"app_id": "X1", "name": "x", "blob_name": "x.pkg"}},
        }
    ),
    "placeholders": (ROOT / "tests" / "fixtures" / "seed-example.json").read_text(),
}
COMMANDS = {
    "check": lambda: check(TWO_APPS),
    "promote": lambda: promote([]),
    "rollback": lambda: promote(["--rollback", "word"]),
    "verify": lambda: promote(["--verify", "--deep"]),
}


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD_MANIFESTS), ids=list(BAD_MANIFESTS))
def test_untrustworthy_manifest_stops_with_exit_2_and_is_left_untouched(
    feeds: Feeds,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: str,
    command: str,
) -> None:
    (tmp_path / "manifest.json").write_text(BAD_MANIFESTS[case])

    assert COMMANDS[command]() == 2

    assert _manifest_text(tmp_path) == BAD_MANIFESTS[case]
    assert _blobs() == {}
    assert _downloads(feeds) == []
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert str(tmp_path / "manifest.json") in errors[0]


BAD_SETTINGS = {
    "M365_LAG_DAYS": "two weeks",
    "M365_MAX_PACKAGE_BYTES": "-1",
    "M365_CATALOG": "/nonexistent/catalog.toml",
    "M365_NOW": "next tuesday",
    "M365_CHANNEL": "nightly",
    "M365_ALLOWED_HOSTS": "https://127.0.0.1:8080/",
    "AZURE_STORAGE_CONTAINER": "Not_A_Container",
    "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=U2VjcmV0S2V5VmFsdWU=;garbage",
    "GITHUB_REPOSITORY": "not a repository",
}


@pytest.mark.parametrize("command", ["check", "promote"])
@pytest.mark.parametrize("name", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
def test_malformed_setting_stops_with_exit_2_naming_it_and_changes_nothing(
    feeds: Feeds,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    command: str,
) -> None:
    monkeypatch.setenv(name, BAD_SETTINGS[name])

    assert COMMANDS[command]() == 2

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert name in err
    assert "U2VjcmV0S2V5VmFsdWU=" not in err
    assert not (tmp_path / "manifest.json").exists()
    assert not (tmp_path / "blobstore").exists()


# --- promise 5: secrets never in a log line, an exception, an issue or a summary ---

SIGNATURE = "c2lnbmF0dXJlT2ZBU2FzVG9rZW4%3D"


def _sas_failure() -> None:
    raise ServiceRequestError(
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
        f"/devstoreaccount1/c/builds/word.pkg?comp=block&sv=2024-08-04&sig={SIGNATURE}"
        " (Caused by NewConnectionError('Connection refused'))"
    )


def _everything_written(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, summary: Path
) -> str:
    captured = capsys.readouterr()
    published = [
        *(issue["title"] + issue["body"] for issue in github.issues),
        *github.comments,
        github.text or "",
    ]
    return "\n".join([captured.out, captured.err, summary.read_text(), *published])


def test_secrets_stay_out_of_logs_errors_issues_and_summary_at_debug(
    feeds: Feeds,
    azurite: Azurite,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("AZURE_STORAGE_CONTAINER", "secrets")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    with pytest.MonkeyPatch.context() as patch:
        before(patch, BlobClient, "stage_block", _sas_failure, _word_build)

        assert check(["-v", "-v", *TWO_APPS]) == 1

    written = _everything_written(capsys, github, tmp_path / "summary.md")
    assert "Failed (check)" in written, "the failure was reported"
    for secret in (KEY, TOKEN, SIGNATURE, azurite.connection_string):
        assert secret not in written


def _word_build(client: BlobClient, *_: object, **__: object) -> bool:
    return str(client.blob_name).startswith("builds/word/")


def test_sas_connection_string_stays_out_of_locations_logs_and_summary(
    feeds: Feeds,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    sas = generate_account_sas(
        ACCOUNT,
        KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, create=True
        ),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    endpoint = f"http://127.0.0.1:{azurite.port}/{ACCOUNT}"
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"BlobEndpoint={endpoint};SharedAccessSignature={sas}",
    )
    monkeypatch.setenv("AZURE_STORAGE_CONTAINER", "sas")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))

    def not_implemented(*_: object) -> None:
        # What Azurite answers Put Block From URL with a key; with a SAS it says 500.
        error = HttpResponseError(message="Current API is not implemented yet.")
        error.error_code = "APINotImplemented"  # type: ignore[attr-defined]  # set by the SDK's parser
        raise error

    monkeypatch.setattr(AzureBlobStore, "_copy_by_blocks", not_implemented)

    assert check(["-v", "-v", "--app", "mau"]) == 0

    captured = capsys.readouterr()
    written = "\n".join(
        [captured.out, captured.err, (tmp_path / "summary.md").read_text()]
    )
    signature = unquote(sas.split("sig=")[1].split("&")[0])
    for form in (signature, quote(signature, safe=""), quote(signature)):
        assert form not in written
    assert f"{endpoint}/sas/staged/mau.pkg" in written


# --- promise 6: two runs at once lose nothing ---


def _start_slow_check(feeds: Feeds, app: str) -> subprocess.Popen[str]:
    """Start ``check --app APP`` in another process that holds the lock ~3 s."""
    package = feeds.packages[app]
    feeds.cdn.fault(package.path, delay(3))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "check_updates.py"), "--app", app],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while package.path not in feeds.cdn.state.requests:
        assert time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    return process


def test_second_writer_waits_for_the_lock_or_fails_clearly_and_nothing_is_lost(
    feeds: Feeds,
    store_kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert check(["--app", "word"]) == 0
    scheduled = _start_slow_check(feeds, "mau")

    monkeypatch.setenv("M365_LOCK_TIMEOUT", "0.5")
    assert promote(["--hold", "word", "--reason", "broken macros"]) == 1
    assert "another run holds" in capsys.readouterr().err
    monkeypatch.setenv("M365_LOCK_TIMEOUT", "30")
    assert promote(["--hold", "word", "--reason", "broken macros"]) == 0

    _, err = scheduled.communicate(timeout=60)
    assert scheduled.returncode == 0, err
    assert _tiers(tmp_path, "mau")[0] == feeds.packages["mau"].version
    assert _state(tmp_path)["hold"]["reason"] == "broken macros"
    _verified(tmp_path)


# --- the local folder store: bytes and metadata are two files ---


def test_local_copy_killed_between_bytes_and_metadata_is_detected_and_repaired(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = _promotable(feeds, monkeypatch, tmp_path)
    assert promote([]) == 0
    live = tmp_path / "blobstore" / "live" / "word.pkg"

    def live_bytes(_temp: Path, target: Path | str) -> bool:
        return Path(target) == live

    with pytest.MonkeyPatch.context() as patch:
        after(patch, Path, "replace", kill, live_bytes)

        with pytest.raises(Killed):
            promote(["--rollback", "word"])

    assert live.read_bytes() == feeds.packages["word"].body, "v1's bytes, v2's metadata"
    assert _audit(tmp_path).problems != []
    assert promote([]) == 0
    assert _tiers(tmp_path) == (None, v2.version, v1)
    _verified(tmp_path)


def test_local_store_copied_elsewhere_still_verifies(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert check(TWO_APPS) == 0
    shutil.copytree(tmp_path / "blobstore", tmp_path / "moved")
    monkeypatch.setenv("M365_STORE_DIR", str(tmp_path / "moved"))

    _verified(tmp_path)
    feeds.cdn.reset_counters()
    assert check(TWO_APPS) == 0
    assert _downloads(feeds) == []


def test_rollback_failing_half_way_puts_storage_back_as_recorded(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = _promotable(feeds, monkeypatch, tmp_path)
    assert promote([]) == 0
    recorded = _manifest_text(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        StorageFaults(patch, store_kind).fail_copy("previous/")

        assert promote(["--rollback", "word"]) == 1

    assert _manifest_text(tmp_path) == recorded
    assert b"".join(_store().read("live/word.pkg")) == v2.body
    _verified(tmp_path)
    assert promote(["--rollback", "word"]) == 0
    assert _tiers(tmp_path) == (None, v1, v2.version)
    _verified(tmp_path)


def test_hand_edit_on_github_survives_recovery_from_the_journal(
    feeds: Feeds,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    word = feeds.packages["word"]
    _at(monkeypatch, T0)
    assert check(["--app", "word", "--app", "mau"]) == 0
    publish(feeds, "word", word.version, "16.113.26090110", package_body("w2", 90_000))
    github.refuse_puts = [(502, "Bad Gateway")] * 10
    _at(monkeypatch, T0 + timedelta(days=1))
    assert check(["--app", "word"]) == 1  # the commit failed; the store's copy is ahead
    github.refuse_puts = []
    edited = json.loads(github.text or "")
    edited["apps"]["mau"]["hold"] = {
        "reason": "known bad",
        "since": "2026-09-02T00:00:00Z",
    }
    github.text, github.sha = json.dumps(edited, indent=2), github.sha + 1

    _at(monkeypatch, T0 + timedelta(days=20))
    assert promote([]) == 0

    recorded = json.loads(github.text or "")
    assert recorded["apps"]["mau"]["hold"]["reason"] == "known bad"
    assert recorded["apps"]["mau"]["live"] is None, "a held build was promoted"
    assert recorded["apps"]["word"]["live"]["version"] == "16.113.26090110"
    _verified(tmp_path)
