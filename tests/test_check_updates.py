"""End to end: check_updates.py's main() against the local CDN, into both stores."""

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from m365_update_manager.audit import audit
from m365_update_manager.cli.check import main
from m365_update_manager.manifest import ManifestFile
from m365_update_manager.runtime import open_store
from m365_update_manager.settings import load_settings
from tests.conftest import Feeds
from tests.support.cdn import cut_after, status


def _blob_bytes(name: str) -> bytes:
    store = open_store(load_settings())
    return b"".join(store.read(name))


def _manifest(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "manifest.json").read_text())
    return data


def test_check_stages_every_default_app_and_verifies(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    assert main([]) == 0

    manifest = _manifest(tmp_path)
    assert set(manifest["apps"]) == set(feeds.packages)
    for app, package in feeds.packages.items():
        staged = manifest["apps"][app]["staged"]
        assert staged["version"] == package.version
        assert staged["sha256"] == package.sha256
        assert _blob_bytes(f"staged/{app}.pkg") == package.body
        build = manifest["apps"][app]["builds"][0]
        assert build["blob"].startswith(f"builds/{app}/{package.version}/")
        assert _blob_bytes(build["blob"]) == package.body
    assert audit(
        open_store(load_settings()),
        ManifestFile(tmp_path / "manifest.json").load(),
        deep=True,
    ).ok


def test_check_second_run_makes_one_small_request_per_app_and_writes_nothing(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    assert main([]) == 0
    before = (tmp_path / "manifest.json").read_text()
    feeds.cdn.reset_counters()

    assert main([]) == 0

    assert len(feeds.cdn.state.requests) == len(feeds.packages)
    assert all(path.endswith("-chk.xml") for path in feeds.cdn.state.requests)
    assert feeds.cdn.state.bytes_sent < 1024 * len(feeds.packages)
    assert (tmp_path / "manifest.json").read_text() == before


def test_check_truncated_download_leaves_no_blob_and_stages_the_others(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    word = feeds.packages["word"]
    feeds.cdn.fault(word.path, *[cut_after(1000)] * 10)

    assert main([]) == 1

    store = open_store(load_settings())
    assert store.list("builds/word/") == []
    assert store.info("staged/word.pkg") is None
    manifest = _manifest(tmp_path)
    assert "word" not in manifest["apps"]
    assert (
        manifest["apps"]["excel"]["staged"]["sha256"] == feeds.packages["excel"].sha256
    )


def test_check_interrupted_download_resumes_with_range(
    feeds: Feeds, store_kind: str, tmp_path: Path
) -> None:
    mau = feeds.packages["mau"]
    feeds.cdn.fault(mau.path, cut_after(70_000))

    assert main(["--app", "mau"]) == 0

    ranges = [
        h.get("Range")
        for p, h in zip(feeds.cdn.state.requests, feeds.cdn.state.headers, strict=True)
        if p == mau.path
    ]
    # Bytes of the read that broke are lost; the resume starts after the last whole read.
    assert ranges == [None, "bytes=65536-"]
    assert _blob_bytes("staged/mau.pkg") == mau.body


def test_check_server_error_then_success_is_retried(
    feeds: Feeds, tmp_path: Path
) -> None:
    mau = feeds.packages["mau"]
    feeds.cdn.fault(mau.path, status(503), status(429))

    assert main(["--app", "mau"]) == 0

    assert hashlib.sha256(_blob_bytes("staged/mau.pkg")).hexdigest() == mau.sha256


def test_check_dry_run_prints_the_plan_and_writes_nothing(
    feeds: Feeds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dry-run", "--app", "word"]) == 0

    assert (
        capsys.readouterr().out
        == f"would stage word {feeds.packages['word'].version}\n"
    )
    assert not (tmp_path / "manifest.json").exists()
    assert not (tmp_path / "blobstore").exists()
    assert feeds.packages["word"].path not in feeds.cdn.state.requests


def test_check_unknown_app_is_a_settings_error(feeds: Feeds) -> None:
    assert main(["--app", "wordperfect"]) == 2


def test_check_apps_setting_limits_the_run(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("M365_APPS", "mau, teams")

    assert main([]) == 0

    assert set(_manifest(tmp_path)["apps"]) == {"mau", "teams"}


def test_check_app_flag_wins_over_apps_setting(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("M365_APPS", "mau,teams")

    assert main(["--app", "defender"]) == 0

    assert set(_manifest(tmp_path)["apps"]) == {"defender"}
