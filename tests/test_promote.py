"""promote.py end to end: promotion, rollback, holds, the lag clock, status and verify."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from m365_update_manager.audit import audit
from m365_update_manager.cli.check import main as check
from m365_update_manager.cli.promote import main as promote
from m365_update_manager.manifest import ManifestFile
from m365_update_manager.runtime import JOURNAL_BLOB, open_store
from m365_update_manager.settings import load_settings
from tests.conftest import Feeds, package_body

T0 = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)


def _at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setenv("M365_NOW", moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _state(tmp_path: Path, app: str = "word") -> dict[str, Any]:
    state: dict[str, Any] = json.loads((tmp_path / "manifest.json").read_text())[
        "apps"
    ][app]
    return state


def _versions(tmp_path: Path, app: str = "word") -> tuple[str | None, ...]:
    state = _state(tmp_path, app)
    return tuple(
        None if state[t] is None else state[t]["version"]
        for t in ("staged", "live", "previous")
    )


def _verified(tmp_path: Path) -> None:
    report = audit(
        open_store(load_settings()),
        ManifestFile(tmp_path / "manifest.json").load(),
        deep=True,
    )
    assert report.problems == []
    assert report.orphans == []


def publish(feeds: Feeds, app: str, app_id: str, old: str, new: str) -> bytes:
    """Make the local feed offer ``new`` instead of ``old`` with a new package body."""
    for suffix in (".xml", "-chk.xml"):
        path = feeds.feed_path(app_id, suffix)
        feeds.cdn.add(
            path, feeds.cdn.state.files[path].replace(old.encode(), new.encode())
        )
    body = package_body(app + new, 120_000)
    original = feeds.packages[app]
    feeds.cdn.add(original.path.replace(original.version, new), body)
    return body


def _stage(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    _at(monkeypatch, moment)
    assert check(["--app", "word"]) == 0


def test_promote_state_machine_keeps_storage_and_manifest_in_step(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = "16.113.26090110"
    _stage(monkeypatch, T0)
    _at(monkeypatch, T0 + timedelta(days=14))
    assert promote([]) == 0
    assert _versions(tmp_path) == (None, v1, None)
    _verified(tmp_path)

    publish(feeds, "word", "MSWD2019", v1, v2)
    _stage(monkeypatch, T0 + timedelta(days=15))
    assert _versions(tmp_path) == (v2, v1, None)
    _at(monkeypatch, T0 + timedelta(days=29, hours=1))
    assert promote([]) == 0
    assert _versions(tmp_path) == (None, v2, v1)
    _verified(tmp_path)

    assert promote(["--rollback", "word"]) == 0
    assert _versions(tmp_path) == (None, v1, v2)
    _verified(tmp_path)
    assert promote(["--rollback", "word"]) == 0
    assert _versions(tmp_path) == (None, v2, v1)
    _verified(tmp_path)
    assert promote(["--rollback", "word"]) == 0

    assert promote([]) == 0
    assert _versions(tmp_path) == (None, v1, v2), (
        "a rolled-back build is not promoted again on schedule"
    )
    live = b"".join(open_store(load_settings()).read("live/word.pkg"))
    assert live == feeds.packages["word"].body
    _verified(tmp_path)


def test_promote_new_build_mid_lag_does_not_starve_live(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    _stage(monkeypatch, T0)
    builds = [v1]
    for week in range(1, 4):
        new = f"16.{112 + week}.2609{week:02d}00"
        publish(feeds, "word", "MSWD2019", builds[-1], new)
        builds.append(new)
        _stage(monkeypatch, T0 + timedelta(days=7 * week))

    _at(monkeypatch, T0 + timedelta(days=21, hours=1))
    assert promote([]) == 0

    staged, live, _ = _versions(tmp_path)
    assert staged == builds[3]
    assert live == builds[1], "the newest build that has aged 14 days goes live"
    _verified(tmp_path)


@pytest.mark.parametrize(
    "tz", ["UTC", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Kiritimati"]
)
@pytest.mark.parametrize(
    ("lag", "offset", "promoted"),
    [
        (14, timedelta(minutes=-1), False),
        (14, timedelta(0), True),
        (14, timedelta(minutes=1), True),
        (0.5, timedelta(minutes=-1), False),
        (0.5, timedelta(0), True),
        (2.25, timedelta(minutes=1), True),
    ],
    ids=[
        "14d-minus-1m",
        "14d-exact",
        "14d-plus-1m",
        "half-day-minus-1m",
        "half-day-exact",
        "2.25d-plus-1m",
    ],
)
def test_promote_lag_boundary_in_any_time_zone(
    feeds: Feeds,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tz: str,
    lag: float,
    offset: timedelta,
    promoted: bool,
) -> None:
    monkeypatch.setenv("TZ", tz)
    monkeypatch.setenv("M365_LAG_DAYS", str(lag))
    _stage(monkeypatch, T0)

    _at(monkeypatch, T0 + timedelta(days=lag) + offset)
    assert promote([]) == 0

    live = _state(tmp_path)["live"]
    assert (live is not None) is promoted


def test_promote_hold_blocks_and_release_resumes(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stage(monkeypatch, T0)
    assert promote(["--hold", "word", "--reason", "waiting for a fix"]) == 0
    _at(monkeypatch, T0 + timedelta(days=20))

    assert promote([]) == 0
    assert _state(tmp_path)["live"] is None
    assert promote(["--release", "word"]) == 0
    assert promote([]) == 0

    state = _state(tmp_path)
    assert state["live"]["version"] == feeds.packages["word"].version
    assert [h["action"] for h in state["history"]] == [
        "staged",
        "held",
        "released",
        "promoted",
    ]


def test_promote_fast_track_promotes_now_and_records_why(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stage(monkeypatch, T0)

    assert promote(["--fast-track", "word", "--reason", "CVE fix"]) == 0

    state = _state(tmp_path)
    assert state["live"]["version"] == feeds.packages["word"].version
    assert state["history"][-1]["command"] == "fast-track"
    assert state["history"][-1]["reason"] == "CVE fix"
    _verified(tmp_path)


def test_promote_hold_without_reason_is_an_argument_error(feeds: Feeds) -> None:
    with pytest.raises(SystemExit) as exit_info:
        promote(["--hold", "word"])
    assert exit_info.value.code == 2


def test_rollback_without_previous_refuses_and_changes_nothing(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stage(monkeypatch, T0)
    before = (tmp_path / "manifest.json").read_text()

    assert promote(["--rollback", "word"]) == 1

    assert (tmp_path / "manifest.json").read_text() == before


def test_promote_build_pulled_from_feed_is_held_back_with_exit_zero(
    feeds: Feeds,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1 = feeds.packages["word"].version
    v2 = "16.113.26090110"
    publish(feeds, "word", "MSWD2019", v1, v2)
    _stage(monkeypatch, T0)
    publish(feeds, "word", "MSWD2019", v2, v1)
    _stage(monkeypatch, T0 + timedelta(days=1))

    _at(monkeypatch, T0 + timedelta(days=15))
    assert promote([]) == 0

    assert _state(tmp_path)["live"]["version"] == v1, (
        "the build the feed still offers may go"
    )
    out = capsys.readouterr().out
    assert "Held back" in out or "held-back" in out
    assert v2 in out


def test_promote_dry_run_writes_nothing(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stage(monkeypatch, T0)
    before = (tmp_path / "manifest.json").read_text()
    _at(monkeypatch, T0 + timedelta(days=15))

    assert promote(["--dry-run"]) == 0
    assert promote(["--dry-run", "--fast-track", "word", "--reason", "x"]) == 0

    assert (tmp_path / "manifest.json").read_text() == before
    assert open_store(load_settings()).info("live/word.pkg") is None


def test_status_shows_versions_and_due_date(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stage(monkeypatch, T0)
    capsys.readouterr()

    assert promote(["--status"]) == 0

    out = capsys.readouterr().out
    assert feeds.packages["word"].version in out
    assert "due 2026-09-15 06:00 UTC" in out


def test_verify_reports_a_blob_that_differs(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stage(monkeypatch, T0)
    assert promote(["--verify", "--deep"]) == 0
    (tmp_path / "blobstore" / "staged" / "word.pkg").write_bytes(b"tampered")

    assert promote(["--verify"]) == 1


def test_promote_copies_server_side_and_downloads_nothing(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stage(monkeypatch, T0)
    feeds.cdn.reset_counters()
    store_type = type(open_store(load_settings()))
    copies: list[tuple[str, str]] = []
    real_copy = store_type.copy

    def record_copy(self: Any, source: str, destination: str) -> Any:
        copies.append((source, destination))
        return real_copy(self, source, destination)

    real_read, real_writer = store_type.read, store_type.writer

    def journal_only(real: Any) -> Any:
        def guarded(self: Any, name: str) -> Any:
            if name != JOURNAL_BLOB:
                raise AssertionError(f"promotion moved {name} through this machine")
            return real(self, name)

        return guarded

    monkeypatch.setattr(store_type, "copy", record_copy)
    monkeypatch.setattr(store_type, "read", journal_only(real_read))
    monkeypatch.setattr(store_type, "writer", journal_only(real_writer))
    _at(monkeypatch, T0 + timedelta(days=14))

    assert promote([]) == 0

    assert feeds.cdn.state.requests == []
    build = _state(tmp_path)["live"]
    assert copies == [(_state(tmp_path)["builds"][0]["blob"], "live/word.pkg")]
    assert build["version"] == feeds.packages["word"].version


def test_failed_commit_is_recovered_from_the_store_journal(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    v2 = "16.113.26090110"
    _stage(monkeypatch, T0)
    _at(monkeypatch, T0 + timedelta(days=14))
    assert promote([]) == 0
    publish(feeds, "word", "MSWD2019", v1, v2)
    _stage(monkeypatch, T0 + timedelta(days=15))
    _at(monkeypatch, T0 + timedelta(days=30))
    assert promote([]) == 0
    stale = (tmp_path / "manifest.json").read_text()
    assert promote(["--rollback", "word"]) == 0
    (tmp_path / "manifest.json").write_text(stale)  # the rollback's record was lost

    assert promote([]) == 0

    assert _versions(tmp_path) == (None, v1, v2), "the rollback stands"
    _verified(tmp_path)
