"""Edge cases found by trying to break the product: each pins the behaviour it fixed."""

import json
from datetime import timedelta
from pathlib import Path

import pytest

from m365_update_manager.cli.check import main as check
from m365_update_manager.cli.promote import main as promote
from m365_update_manager.errors import ManifestError
from m365_update_manager.manifest import parse_manifest_text
from tests.conftest import Feeds
from tests.support.cdn import status
from tests.support.faults import FakeGitHub, StorageFaults
from tests.test_faults import github  # noqa: F401  # the fixture, used by name
from tests.test_promote import T0, _at, _versions, publish

V2 = "16.113.26090110"


def _live_v2_over_v1(feeds: Feeds, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage and promote word's first build, then V2: live V2, previous the first."""
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=14))
    assert promote([]) == 0
    publish(feeds, "word", "MSWD2019", feeds.packages["word"].version, V2)
    _at(monkeypatch, T0 + timedelta(days=15))
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=30))
    assert promote([]) == 0


def _replace_in_word_manifest(feeds: Feeds, old: str, new: str) -> None:
    path = feeds.feed_path("MSWD2019")
    feeds.cdn.add(path, feeds.cdn.state.files[path].replace(old.encode(), new.encode()))


def test_feed_going_back_below_live_is_recorded_and_the_pulled_build_held(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = feeds.packages["word"].version
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=14))
    assert promote([]) == 0
    publish(feeds, "word", "MSWD2019", v1, V2)
    _at(monkeypatch, T0 + timedelta(days=15))
    assert check(["--app", "word"]) == 0
    publish(feeds, "word", "MSWD2019", V2, "16.111.26070000")
    _at(monkeypatch, T0 + timedelta(days=16))
    assert check(["--app", "word"]) == 0

    _at(monkeypatch, T0 + timedelta(days=40))
    assert promote([]) == 0

    feed = json.loads((tmp_path / "manifest.json").read_text())["apps"]["word"]["feed"]
    assert feed["version"] == "16.111.26070000"
    assert _versions(tmp_path)[1] == v1, "the pulled build stays out of live/"


def test_app_listed_in_settings_without_state_is_skipped_not_fatal(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("M365_APPS", "word,excel")
    for suffix in (".xml", "-chk.xml"):
        feeds.cdn.fault(feeds.feed_path("XCEL2019", suffix), *[status(404)] * 5)
    _at(monkeypatch, T0)
    assert check([]) == 1
    _at(monkeypatch, T0 + timedelta(days=15))

    assert promote([]) == 0

    assert _versions(tmp_path)[1] == feeds.packages["word"].version


@pytest.mark.parametrize(
    "name",
    ["Word%00evil.pkg", "W" * 300 + ".pkg", "Word%0AERROR%20forged_Updater.pkg"],
    ids=["nul", "too-long", "newline"],
)
def test_hostile_package_file_name_fails_that_app_alone(
    feeds: Feeds, tmp_path: Path, name: str
) -> None:
    package = feeds.packages["word"]
    _replace_in_word_manifest(feeds, package.path.rsplit("/", 1)[1], name)

    assert check(["--app", "word", "--app", "mau"]) == 1

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "word" not in manifest["apps"]
    assert manifest["apps"]["mau"]["staged"] is not None
    assert not list((tmp_path / "blobstore" / "builds").glob("word/*/*"))


def test_unparsable_package_url_fails_that_app_alone(feeds: Feeds) -> None:
    package = feeds.packages["word"]
    _replace_in_word_manifest(
        feeds, feeds.cdn.base + package.path, "https://[::1/W.pkg"
    )

    assert check(["--app", "word", "--app", "mau"]) == 1


@pytest.mark.parametrize("lag", ["1e10", "3651"], ids=["exponent", "over-ten-years"])
def test_lag_beyond_ten_years_is_a_settings_error(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, lag: str
) -> None:
    monkeypatch.setenv("M365_LAG_DAYS", lag)

    assert promote([]) == 2


def test_deeply_nested_manifest_is_refused() -> None:
    with pytest.raises(ManifestError, match="nested too deeply"):
        parse_manifest_text("[" * 100_000, "manifest.json")


@pytest.mark.parametrize(
    "argv",
    [["--status"], ["--verify"]],
    ids=["status", "verify"],
)
def test_store_folder_that_is_a_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("M365_STORE_DIR", str(tmp_path / "afile"))

    assert promote(argv) == 1


def test_check_dry_run_with_store_folder_a_file_is_a_clear_error(
    feeds: Feeds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("M365_STORE_DIR", str(tmp_path / "afile"))

    assert check(["--dry-run", "--app", "word"]) == 1


def test_passing_chk_404_does_not_stop_polling_chk(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch
) -> None:
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    feeds.cdn.fault(feeds.feed_path("MSWD2019", "-chk.xml"), status(404))
    assert check(["--app", "word"]) == 0
    feeds.cdn.reset_counters()

    assert check(["--app", "word"]) == 0

    assert [p.rsplit("/", 1)[1] for p in feeds.cdn.state.requests] == [
        "0409MSWD2019-chk.xml"
    ]


def test_empty_package_is_refused(feeds: Feeds, tmp_path: Path) -> None:
    feeds.cdn.add(feeds.packages["word"].path, b"")

    assert check(["--app", "word"]) == 1

    assert not (tmp_path / "blobstore" / "staged" / "word.pkg").exists()


def test_each_of_repeated_rollbacks_is_reported(
    feeds: Feeds,
    github: FakeGitHub,  # noqa: F811  # the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _live_v2_over_v1(feeds, monkeypatch)

    for day in (31, 32, 33):
        _at(monkeypatch, T0 + timedelta(days=day))
        assert promote(["--rollback", "word"]) == 0

    titles = [issue["title"] for issue in github.issues]
    assert len([t for t in titles if t.startswith("Rolled back")]) == 3


def test_promotion_between_checks_keeps_a_verified_build_for_adoption(
    feeds: Feeds, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    publish(feeds, "word", "MSWD2019", feeds.packages["word"].version, V2)
    _at(monkeypatch, T0 + timedelta(days=1))
    with pytest.MonkeyPatch.context() as patch:
        StorageFaults(patch, store_kind).fail_copy("staged/word")
        assert check(["--app", "word"]) == 1
    assert promote([]) == 0
    feeds.cdn.reset_counters()

    assert check(["--app", "word"]) == 0

    assert not [p for p in feeds.cdn.state.requests if p.endswith(".pkg")]


def test_hand_release_on_github_survives_a_failed_commit_and_recovery(
    feeds: Feeds,
    github: FakeGitHub,  # noqa: F811  # the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _at(monkeypatch, T0)
    assert check(["--app", "word", "--app", "mau"]) == 0
    github.edit(
        lambda d: d["apps"]["mau"].update(
            hold={"reason": "x", "since": "2026-09-01T07:00:00Z"}
        )
    )
    publish(feeds, "word", "MSWD2019", feeds.packages["word"].version, V2)
    github.refuse_puts = [(502, "Bad Gateway")] * 10
    _at(monkeypatch, T0 + timedelta(days=1))
    assert check(["--app", "word"]) == 1
    github.refuse_puts = []
    github.edit(lambda d: d["apps"]["mau"].update(hold=None))

    _at(monkeypatch, T0 + timedelta(days=20))
    assert promote([]) == 0

    recorded = json.loads(github.text or "")
    assert recorded["apps"]["mau"]["hold"] is None
    assert recorded["apps"]["mau"]["live"] is not None


def test_state_file_in_a_missing_folder_stops_before_any_storage_work(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("M365_MANIFEST", str(tmp_path / "no-such-dir" / "manifest.json"))

    assert check(["--app", "mau"]) == 2

    assert not (tmp_path / "blobstore").exists()


def test_status_with_app_shows_that_app_only(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(["--app", "word", "--app", "mau"]) == 0
    capsys.readouterr()

    assert promote(["--status", "--app", "word"]) == 0

    out = capsys.readouterr().out
    assert "word" in out
    assert "mau" not in out


def test_scheduled_promote_dry_run_prints_its_plan(
    feeds: Feeds, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _at(monkeypatch, T0)
    assert check(["--app", "word"]) == 0
    _at(monkeypatch, T0 + timedelta(days=15))
    capsys.readouterr()

    assert promote(["--dry-run"]) == 0

    assert (
        capsys.readouterr().out
        == f"would promote word {feeds.packages['word'].version}\n"
    )


def test_failed_rollback_commit_does_not_advise_rolling_back_again(
    feeds: Feeds,
    github: FakeGitHub,  # noqa: F811  # the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _live_v2_over_v1(feeds, monkeypatch)
    github.refuse_puts = [(502, "Bad Gateway")] * 10

    assert promote(["--rollback", "word"]) == 1

    failure = next(i for i in github.issues if i["title"].startswith("Failed"))
    assert "--status" in failure["body"]
    assert "--rollback` again" not in failure["body"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--rollback", "wrod"],
        ["--hold", "wrod", "--reason", "x"],
        ["--release", "wrod"],
    ],
    ids=["rollback", "hold", "release"],
)
def test_typo_in_an_app_name_is_an_argument_error(
    feeds: Feeds, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(["--app", "word"]) == 0

    assert promote(argv) == 2

    assert "unknown app wrod" in capsys.readouterr().err


def test_app_flag_takes_a_comma_list_like_the_setting(
    feeds: Feeds, tmp_path: Path
) -> None:
    assert check(["--app", "mau,teams"]) == 0

    apps = json.loads((tmp_path / "manifest.json").read_text())["apps"]
    assert set(apps) == {"mau", "teams"}
