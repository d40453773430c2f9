"""Tests of ``manifest.json``: reading, upgrading, refusing, writing and merging."""

import hashlib
import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from m365_update_manager.catalog import App
from m365_update_manager.errors import ManifestError
from m365_update_manager.manifest import (
    HISTORY_LIMIT,
    AppState,
    Build,
    FeedState,
    HistoryEntry,
    Hold,
    Manifest,
    ManifestFile,
    Tier,
    clean_reason,
    format_time,
    merge,
    parse_manifest_text,
)

FIXTURES = Path(__file__).parent / "fixtures"
SEED_FORMAT = FIXTURES / "seed-format.json"
SEED_EXAMPLE = FIXTURES / "seed-example.json"
BASE_URL = "https://res.public.onecdn.static.microsoft/mro1cdnstorage/C1297A47-86C4-4C1F-97FA-950631F94777/MacAutoupdate"
T0 = datetime(2026, 8, 1, 6, tzinfo=UTC)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
V1, V2, V3, V4 = (
    "16.110.26061210",
    "16.111.26072014",
    "16.112.26081720",
    "16.113.26090110",
)


def sha(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()


def url(version: str) -> str:
    return f"{BASE_URL}/Microsoft_Word_{version}_Updater.pkg"


def build(version: str, seen: datetime = T0, **changes: Any) -> Build:
    return Build(
        version=version,
        sha256=sha(version),
        size=1000,
        download_url=url(version),
        blob=f"builds/word/{version}/Microsoft_Word_{version}_Updater.pkg",
        first_seen=seen,
        **changes,
    )


def tier(version: str, **changes: Any) -> Tier:
    return Tier(
        version=version, sha256=sha(version), download_url=url(version), **changes
    )


def entry(action: str, at: datetime, to_version: str | None = None) -> HistoryEntry:
    return HistoryEntry(at=at, action=action, to_version=to_version, command="test")


def word_state(**changes: Any) -> AppState:
    state = AppState.new(App("word", "MSWD2019", "Microsoft Word"))
    return state.model_copy(update=changes, deep=True)


def manifest(**apps: AppState) -> Manifest:
    return Manifest(last_updated=T0, apps=apps)


def walk(value: object) -> list[object]:
    """Return every value nested in a JSON document."""
    if isinstance(value, dict):
        return [value, *(item for v in value.values() for item in walk(v))]
    if isinstance(value, list):
        return [value, *(item for v in value for item in walk(v))]
    return [value]


def test_parse_seed_format_is_upgraded_to_schema_2() -> None:
    result = parse_manifest_text(SEED_FORMAT.read_text(), str(SEED_FORMAT))

    assert result.schema_version == 2
    assert (result.channel, result.lag_days) == ("current", 14.0)
    assert result.last_updated == datetime(2026, 8, 22, 14, tzinfo=UTC)
    assert set(result.apps) == {"word", "excel"}


def test_parse_seed_format_derives_one_build_per_recorded_tier() -> None:
    word = parse_manifest_text(SEED_FORMAT.read_text(), "seed").apps["word"]

    assert [b.version for b in word.builds] == ["16.92.24120731", "16.102.25101223", V3]
    staged = word.build(V3)
    assert staged is not None
    assert word.staged is not None
    assert staged.blob == f"builds/word/{V3}/Microsoft_Word_{V3}_Updater.pkg"
    assert (staged.sha256, staged.download_url) == (
        word.staged.sha256,
        word.staged.download_url,
    )
    assert staged.first_seen == datetime(2026, 8, 17, 14, 5, 11, tzinfo=UTC)
    assert staged.size == 0
    live = word.build("16.102.25101223")
    assert live is not None
    assert live.first_seen == datetime(2025, 10, 27, 8, tzinfo=UTC)


def test_parse_seed_format_app_with_null_tiers_gets_only_its_live_build() -> None:
    excel = parse_manifest_text(SEED_FORMAT.read_text(), "seed").apps["excel"]

    assert (excel.staged, excel.previous) == (None, None)
    assert [b.version for b in excel.builds] == ["16.102.25101223"]
    assert excel.history == []


def test_parse_seed_format_upgraded_then_dumped_reads_back_the_same() -> None:
    upgraded = parse_manifest_text(SEED_FORMAT.read_text(), "seed")

    again = parse_manifest_text(upgraded.dump(), "dumped")

    assert again == upgraded
    assert json.loads(upgraded.dump())["schema_version"] == 2


def test_parse_legacy_manifest_tiers_naming_one_build_give_one_build() -> None:
    data = json.loads(SEED_FORMAT.read_text())
    data["apps"]["word"]["live"] = {
        **data["apps"]["word"]["staged"],
        "promoted_at": "2026-08-20T08:00:00Z",
    }

    word = parse_manifest_text(json.dumps(data), "seed").apps["word"]

    assert [b.version for b in word.builds] == ["16.92.24120731", V3]


def test_parse_seed_example_placeholders_raise_manifest_error() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest_text(SEED_EXAMPLE.read_text(), str(SEED_EXAMPLE))

    message = str(caught.value)
    assert message.startswith(f"{SEED_EXAMPLE}: ")
    assert "placeholder" in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("sha256", "abc123..."), ("download_url", "https://..."), ("sha256", "A" * 64)],
    ids=["sha256-placeholder", "url-placeholder", "sha256-upper-case"],
)
def test_parse_schema_2_placeholder_value_raises_manifest_error(
    field: str, value: str
) -> None:
    data = json.loads(manifest(word=word_state(live=tier(V3))).dump())
    data["apps"]["word"]["live"][field] = value

    with pytest.raises(ManifestError, match=re.escape(f"apps.word.live.{field}")):
        parse_manifest_text(json.dumps(data), "manifest.json")


@pytest.mark.parametrize(
    "version",
    [1, 3, "2", None, True, 2.5],
    ids=["one", "three", "text", "null", "boolean", "fraction"],
)
def test_parse_unknown_schema_version_raises_manifest_error(version: object) -> None:
    text = json.dumps({"schema_version": version, "apps": {}})

    with pytest.raises(
        ManifestError, match=r"^manifest.json: schema_version .* upgrade"
    ):
        parse_manifest_text(text, "manifest.json")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{\n  "apps": {\n    "word": \n  }\n}\n', 4),
        ('{"apps": {}', 1),
        ("", 1),
        ('{\n  "channel": "current",\n  "apps": {},\n}\n', 4),
    ],
    ids=["missing-value", "unclosed", "empty", "trailing-comma"],
)
def test_parse_broken_json_raises_manifest_error_naming_file_and_line(
    text: str, line: int
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest_text(text, "state/manifest.json")

    message = str(caught.value)
    assert message.startswith("state/manifest.json: broken JSON")
    assert f"line {line}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text",
    ["[]", '"manifest"', '{"schema_version": 2, "apps": []}', '{"apps": "word"}'],
    ids=["array", "string", "apps-array-schema-2", "apps-string-legacy"],
)
def test_parse_wrong_shape_raises_manifest_error(text: str) -> None:
    with pytest.raises(ManifestError, match=r"^m\.json: "):
        parse_manifest_text(text, "m.json")


@pytest.mark.parametrize(
    "name",
    ["../x", "Word", "word\n", "a/b", "", "..", "word.pkg", "x" * 41],
    ids=[
        "parent-path",
        "upper-case",
        "trailing-newline",
        "slash",
        "empty",
        "dot-dot",
        "dot",
        "too-long",
    ],
)
@pytest.mark.parametrize("schema", ["legacy", "schema-2"], ids=["legacy", "schema-2"])
def test_parse_unsafe_app_name_raises_manifest_error(name: str, schema: str) -> None:
    state = json.loads(word_state().model_dump_json())
    data: dict[str, Any] = {"apps": {name: state}}
    if schema == "schema-2":
        data["schema_version"] = 2

    with pytest.raises(ManifestError, match="not a plain short name"):
        parse_manifest_text(json.dumps(data), "manifest.json")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("channel", "nightly"),
        ("lag_days", -1),
        ("lag_days", "Infinity"),
        ("last_updated", "yesterday"),
    ],
    ids=["unknown-channel", "negative-lag", "infinite-lag", "bad-time"],
)
def test_parse_bad_top_level_value_raises_manifest_error(
    key: str, value: object
) -> None:
    data = json.loads(Manifest().dump())
    data[key] = value
    text = json.dumps(data).replace('"Infinity"', "Infinity")

    with pytest.raises(ManifestError, match=re.escape(f"manifest.json: {key}")):
        parse_manifest_text(text, "manifest.json")


def test_parse_unknown_fields_are_kept() -> None:
    data = json.loads(manifest(word=word_state()).dump())
    data["note"] = "kept"
    data["apps"]["word"]["owner"] = "mac team"

    result = parse_manifest_text(json.dumps(data), "manifest.json")

    assert json.loads(result.dump())["note"] == "kept"
    assert json.loads(result.dump())["apps"]["word"]["owner"] == "mac team"


def test_manifest_dump_is_sorted_indented_with_utc_seconds_timestamps() -> None:
    paris = timezone(timedelta(hours=2))
    state = word_state(
        staged=tier(
            V3, staged_at=datetime(2026, 8, 17, 16, 5, 11, 987654, tzinfo=paris)
        ),
        builds=[build(V3, datetime(2026, 8, 17, 14, 5, 11))],
        feed=FeedState(version=V3, download_url=url(V3), seen_at=T0),
        history=[entry("staged", T0, V3)],
    )

    text = manifest(word=state).dump()

    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["apps"]["word"]["staged"]["staged_at"] == "2026-08-17T14:05:11Z"
    assert data["apps"]["word"]["builds"][0]["first_seen"] == "2026-08-17T14:05:11Z"
    stamps = [
        v
        for v in walk(data)
        if isinstance(v, str) and re.match(r"^\d{4}-\d\d-\d\dT", v)
    ]
    assert len(stamps) == 5  # last_updated, staged_at, first_seen, seen_at, at
    assert all(TIMESTAMP.match(stamp) for stamp in stamps)


def test_manifest_dump_writes_schema_version_and_null_tiers() -> None:
    data = json.loads(manifest(word=word_state()).dump())

    assert data["schema_version"] == 2
    assert data["apps"]["word"]["live"] is None


def test_manifest_content_ignores_last_updated() -> None:
    first = manifest(word=word_state())
    later = first.model_copy(update={"last_updated": T0 + timedelta(days=1)})

    assert first.content() == later.content()
    assert "last_updated" not in first.content()


def test_format_time_converts_to_utc() -> None:
    moment = datetime(2026, 8, 17, 16, 5, 11, tzinfo=timezone(timedelta(hours=2)))

    assert format_time(moment) == "2026-08-17T14:05:11Z"


def test_app_state_record_keeps_the_most_recent_entries() -> None:
    state = word_state()

    for number in range(HISTORY_LIMIT + 5):
        state.record(entry(f"step-{number}", T0 + timedelta(minutes=number)))

    assert len(state.history) == HISTORY_LIMIT
    assert state.history[0].action == "step-5"
    assert state.history[-1].action == f"step-{HISTORY_LIMIT + 4}"


def test_app_state_new_names_the_blob_after_the_short_name() -> None:
    state = AppState.new(App("companyportal", "IMCP01", "Company Portal"))

    assert (state.app_id, state.name, state.blob_name) == (
        "IMCP01",
        "Company Portal",
        "companyportal.pkg",
    )


def test_app_state_build_finds_a_recorded_version_only() -> None:
    state = word_state(builds=[build(V2), build(V3)])

    assert state.build(V3) == build(V3)
    assert state.build(V4) is None


def test_manifest_file_load_missing_file_gives_empty_manifest(tmp_path: Path) -> None:
    result = ManifestFile(tmp_path / "manifest.json").load()

    assert result == Manifest()
    assert not (tmp_path / "manifest.json").exists()


def test_manifest_file_save_then_load_round_trips(tmp_path: Path) -> None:
    state_file = ManifestFile(tmp_path / "manifest.json")
    original = manifest(word=word_state(live=tier(V3), builds=[build(V3)]))

    state_file.save(original)

    assert state_file.load() == original
    assert (tmp_path / "manifest.json").read_text() == original.dump()


def test_manifest_file_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    ManifestFile(tmp_path / "manifest.json").save(manifest(word=word_state()))

    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_manifest_file_save_failing_write_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "manifest.json"
    old = manifest(word=word_state(live=tier(V2)))
    ManifestFile(path).save(old)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)

    with pytest.raises(ManifestError, match="No space left"):
        ManifestFile(path).save(manifest(word=word_state(live=tier(V3))))

    assert path.read_text() == old.dump()
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_manifest_file_save_replaces_through_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("old")
    renames: list[tuple[str, str]] = []
    real_replace = Path.replace

    def recording_replace(self: Path, target: Path) -> Path:
        renames.append((self.read_text(), str(target)))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", recording_replace)
    new = manifest(word=word_state())

    ManifestFile(path).save(new)

    assert renames == [(new.dump(), str(path))]


def test_manifest_file_save_concurrent_temporaries_do_not_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "manifest.json"
    temporaries: list[str] = []
    real_replace = Path.replace

    def recording_replace(self: Path, target: Path) -> Path:
        temporaries.append(self.name)
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", recording_replace)

    ManifestFile(path).save(Manifest())
    ManifestFile(path).save(Manifest())

    assert len(set(temporaries)) == 2
    assert all(name.startswith(".manifest.json.") for name in temporaries)


def test_manifest_file_load_broken_file_names_the_path_and_is_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text('{\n  "apps": {\n')

    with pytest.raises(
        ManifestError, match=f"^{re.escape(str(path))}: broken JSON at line 3"
    ):
        ManifestFile(path).load()

    assert path.read_text() == '{\n  "apps": {\n'


def test_manifest_file_load_not_utf8_raises_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(b'{"channel": "\xff"}')

    with pytest.raises(ManifestError, match="cannot read it"):
        ManifestFile(path).load()


def test_manifest_file_load_seed_format_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(SEED_FORMAT.read_text())

    result = ManifestFile(path).load()

    assert result.schema_version == 2
    assert path.read_text() == SEED_FORMAT.read_text()


@pytest.fixture
def base() -> Manifest:
    """The state both writers read: word live V2 and staged V3, excel live V2."""
    word = word_state(
        live=tier(V2),
        staged=tier(V3, staged_at=T0),
        builds=[build(V2), build(V3)],
        history=[entry("staged", T0, V3)],
    )
    excel = word_state(app_id="XCEL2019", name="Microsoft Excel", blob_name="excel.pkg")
    return manifest(word=word, excel=excel)


def test_merge_field_changed_by_this_run_wins(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].staged = tier(V4)
    theirs.apps["word"].staged = None

    merged = merge(base, ours, theirs)

    assert merged.apps["word"].staged == tier(V4)


def test_merge_other_writers_change_to_another_field_survives(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].feed = FeedState(version=V4, download_url=url(V4), seen_at=T0)
    theirs.apps["word"].live = tier(V3)
    theirs.apps["word"].previous = tier(V2)
    theirs.apps["word"].hold = Hold(reason="pilot", since=T0)

    merged = merge(base, ours, theirs)

    word = merged.apps["word"]
    assert word.feed is not None
    assert word.feed.version == V4
    assert (word.live, word.previous) == (tier(V3), tier(V2))
    assert word.hold == Hold(reason="pilot", since=T0)


def test_merge_other_writers_change_to_another_app_survives(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].staged = tier(V4)
    theirs.apps["excel"].live = tier(V3)

    merged = merge(base, ours, theirs)

    assert merged.apps["excel"].live == tier(V3)
    assert merged.apps["word"].staged == tier(V4)


def test_merge_app_added_by_this_run_is_kept(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    ours.apps["mau"] = AppState.new(App("mau", "MSau04", "Microsoft AutoUpdate"))

    merged = merge(base, ours, base.model_copy(deep=True))

    assert set(merged.apps) == {"word", "excel", "mau"}


def test_merge_app_added_by_the_other_writer_is_kept(base: Manifest) -> None:
    theirs = base.model_copy(deep=True)
    theirs.apps["mau"] = AppState.new(App("mau", "MSau04", "Microsoft AutoUpdate"))

    merged = merge(base, base.model_copy(deep=True), theirs)

    assert "mau" in merged.apps


def test_merge_history_from_both_writers_is_kept_in_time_order(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].record(entry("staged", T0 + timedelta(hours=2), V4))
    theirs.apps["word"].record(entry("promoted", T0 + timedelta(hours=1), V3))

    merged = merge(base, ours, theirs)

    assert [e.action for e in merged.apps["word"].history] == [
        "staged",
        "promoted",
        "staged",
    ]


def test_merge_history_entry_already_in_base_is_not_repeated(base: Manifest) -> None:
    merged = merge(base, base.model_copy(deep=True), base.model_copy(deep=True))

    assert merged.apps["word"].history == base.apps["word"].history


def test_merge_build_blocked_by_other_writer_stays_blocked_when_this_run_adds_one(
    base: Manifest,
) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].builds = [*ours.apps["word"].builds, build(V4)]
    theirs.apps["word"].builds = [build(V2), build(V3, blocked=True)]

    merged = merge(base, ours, theirs)

    assert merged.apps["word"].builds == [build(V2), build(V3, blocked=True), build(V4)]


def test_merge_builds_added_by_both_writers_are_all_kept(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].builds = [*ours.apps["word"].builds, build(V4)]
    theirs.apps["word"].builds = [build(V1), *theirs.apps["word"].builds]

    merged = merge(base, ours, theirs)

    assert [b.version for b in merged.apps["word"].builds] == [V1, V2, V3, V4]


@pytest.mark.parametrize("dropper", ["ours", "theirs"], ids=["ours", "theirs"])
def test_merge_build_dropped_by_one_writer_and_untouched_by_the_other_is_dropped(
    base: Manifest, dropper: str
) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    pruned = ours if dropper == "ours" else theirs
    pruned.apps["word"].builds = [build(V3)]

    merged = merge(base, ours, theirs)

    assert [b.version for b in merged.apps["word"].builds] == [V3]


def test_merge_build_dropped_by_other_writer_but_changed_here_is_kept(
    base: Manifest,
) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].builds = [build(V2, blocked=True), build(V3)]
    theirs.apps["word"].builds = [build(V3)]

    merged = merge(base, ours, theirs)

    assert merged.apps["word"].builds == [build(V2, blocked=True), build(V3)]


def test_merge_app_added_by_both_writers_keeps_both_histories() -> None:
    base = Manifest()
    ours = manifest(word=word_state(staged=tier(V3), history=[entry("staged", T0, V3)]))
    theirs = manifest(
        word=word_state(
            hold=Hold(reason="pilot", since=T0),
            history=[entry("held", T0 - timedelta(hours=1))],
        )
    )

    merged = merge(base, ours, theirs)

    word = merged.apps["word"]
    assert [e.action for e in word.history] == ["held", "staged"]
    assert (word.staged, word.hold) == (tier(V3), Hold(reason="pilot", since=T0))


@pytest.mark.parametrize(
    ("ours_lag", "theirs_lag", "expected"),
    [(7.0, 14.0, 7.0), (14.0, 3.0, 3.0)],
    ids=["changed-here", "changed-there"],
)
def test_merge_top_level_setting_follows_the_writer_that_changed_it(
    base: Manifest, ours_lag: float, theirs_lag: float, expected: float
) -> None:
    ours = base.model_copy(update={"lag_days": ours_lag}, deep=True)
    theirs = base.model_copy(update={"lag_days": theirs_lag}, deep=True)

    assert merge(base, ours, theirs).lag_days == expected


def test_merge_last_updated_is_this_runs(base: Manifest) -> None:
    ours = base.model_copy(update={"last_updated": T0 + timedelta(days=2)}, deep=True)
    theirs = base.model_copy(update={"last_updated": T0 + timedelta(days=1)}, deep=True)

    assert merge(base, ours, theirs).last_updated == T0 + timedelta(days=2)


def test_merge_leaves_its_inputs_unchanged(base: Manifest) -> None:
    ours = base.model_copy(deep=True)
    theirs = base.model_copy(deep=True)
    ours.apps["word"].staged = tier(V4)
    before = (base.dump(), ours.dump(), theirs.dump())

    merge(base, ours, theirs)

    assert (base.dump(), ours.dump(), theirs.dump()) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bad build\nsecond line", "bad build second line"),
        ("  padded\t", "padded"),
        ("x" * 600, "x" * 500),
        ("bell\x07", "bell"),
    ],
    ids=["newline", "padded", "too-long", "control-character"],
)
def test_clean_reason_gives_one_short_printable_line(text: str, expected: str) -> None:
    assert clean_reason(text) == expected
