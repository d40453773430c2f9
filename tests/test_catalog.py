"""Tests of the app catalog: defaults, channels, the M365_CATALOG file and selection."""

from pathlib import Path

import pytest

from m365_update_manager.catalog import (
    APP_NAME,
    CHANNELS,
    DEFAULT_APPS,
    App,
    channel_guid,
    load_catalog,
    select_apps,
)
from m365_update_manager.errors import SettingsError

DEFAULT_IDS = {
    "word": "MSWD2019",
    "excel": "XCEL2019",
    "powerpoint": "PPT32019",
    "outlook": "OPIM2019",
    "onenote": "ONMC2019",
    "teams": "TEAMS21",
    "mau": "MSau04",
    "onedrive": "ONDR18",
    "defender": "WDAV00",
    "companyportal": "IMCP01",
    "windowsapp": "MSRD10",
}
CURRENT = "C1297A47-86C4-4C1F-97FA-950631F94777"
REMOTE_HELP = """\
[apps.remotehelp]
app_id = "MSRH01"
name = "Remote Help"
"""


def catalog_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_catalog_without_file_gives_the_default_apps_by_short_name() -> None:
    catalog = load_catalog(None)

    assert {name: app.app_id for name, app in catalog.items()} == DEFAULT_IDS
    assert list(catalog) == list(DEFAULT_IDS)


def test_default_apps_only_onedrive_is_on_demand() -> None:
    assert [app.name for app in DEFAULT_APPS if app.on_demand] == ["onedrive"]


def test_default_apps_every_entry_has_a_display_name_and_bundle_id() -> None:
    assert all(app.display_name and app.bundle_id for app in DEFAULT_APPS)
    assert all(app.channel is None and app.lag_days is None for app in DEFAULT_APPS)


@pytest.mark.parametrize(
    ("channel", "guid"),
    [
        ("current", CURRENT),
        ("Current", CURRENT),
        ("CURRENT", CURRENT),
        (" current ", CURRENT),
        ("preview", "1ac37578-5a24-40fb-892e-b89d85b6dfaa"),
        ("Beta", "4B2D7701-0A4F-49C8-B4CB-0C2D4043F51F"),
        ("CurrentThrottle", "A1E15C18-4D18-40B0-8577-616A9470BB10"),
        (CURRENT.lower(), CURRENT.lower()),
        (
            "1AC37578-5A24-40FB-892E-B89D85B6DFAA",
            "1AC37578-5A24-40FB-892E-B89D85B6DFAA",
        ),
    ],
    ids=[
        "current",
        "title-case",
        "upper-case",
        "padded",
        "preview",
        "beta",
        "current-throttle",
        "guid-lower-case",
        "guid-upper-case",
    ],
)
def test_channel_guid_name_any_case_or_guid_gives_guid(channel: str, guid: str) -> None:
    assert channel_guid(channel) == guid


@pytest.mark.parametrize(
    "channel",
    [
        "production",
        "insiderfast",
        "",
        "C1297A47-86C4-4C1F-97FA",
        "{C1297A47-86C4-4C1F-97FA-950631F94777}",
        "C1297A47-86C4-4C1F-97FA-950631F94777\n/../x",
        "Z1297A47-86C4-4C1F-97FA-950631F94777",
    ],
    ids=[
        "old-name",
        "old-insider-name",
        "empty",
        "short-guid",
        "braced-guid",
        "guid-with-path",
        "not-hex",
    ],
)
def test_channel_guid_unknown_channel_raises_settings_error(channel: str) -> None:
    with pytest.raises(SettingsError, match="unknown channel"):
        channel_guid(channel)


def test_channels_table_matches_the_feed_brief() -> None:
    assert set(CHANNELS) == {"current", "preview", "beta", "currentthrottle"}


def test_select_apps_no_names_gives_every_app_but_onedrive() -> None:
    selected = select_apps(load_catalog(None), ())

    assert [app.name for app in selected] == [n for n in DEFAULT_IDS if n != "onedrive"]


def test_select_apps_onedrive_named_is_selected() -> None:
    selected = select_apps(load_catalog(None), ["onedrive", "word"])

    assert [app.name for app in selected] == ["onedrive", "word"]


def test_select_apps_repeated_name_is_selected_once() -> None:
    selected = select_apps(load_catalog(None), ("mau", "word", "mau"))

    assert [app.name for app in selected] == ["mau", "word"]


@pytest.mark.parametrize(
    "names",
    [("skype",), ("word", "Word"), ("remotehelp",)],
    ids=["unknown", "wrong-case", "not-in-default-catalog"],
)
def test_select_apps_unknown_name_raises_settings_error_naming_it(
    names: tuple[str, ...],
) -> None:
    with pytest.raises(SettingsError) as caught:
        select_apps(load_catalog(None), names)

    assert f"unknown app {names[-1]}" in str(caught.value)
    assert "word, excel" in str(caught.value)
    assert caught.value.exit_code == 2


def test_load_catalog_file_adds_an_app(tmp_path: Path) -> None:
    catalog = load_catalog(catalog_file(tmp_path, REMOTE_HELP))

    assert catalog["remotehelp"] == App("remotehelp", "MSRH01", "Remote Help")
    assert set(catalog) == {*DEFAULT_IDS, "remotehelp"}
    assert "remotehelp" in [app.name for app in select_apps(catalog, ())]


def test_load_catalog_file_added_app_with_every_key(tmp_path: Path) -> None:
    text = """\
[apps.quickassist]
app_id = "MSQA01"
name = "Quick Assist"
bundle_id = "com.microsoft.quickassist"
channel = "Current"
lag_days = 2.5
on_demand = true
enabled = true
"""

    app = load_catalog(catalog_file(tmp_path, text))["quickassist"]

    assert app == App(
        "quickassist",
        "MSQA01",
        "Quick Assist",
        "com.microsoft.quickassist",
        "Current",
        2.5,
        on_demand=True,
    )


def test_load_catalog_file_overrides_lag_and_channel_of_a_built_in(
    tmp_path: Path,
) -> None:
    text = '[apps.word]\nlag_days = 3\nchannel = "beta"\n'

    word = load_catalog(catalog_file(tmp_path, text))["word"]

    assert (word.app_id, word.display_name) == ("MSWD2019", "Microsoft Word")
    assert (word.channel, word.lag_days) == ("beta", 3.0)
    assert isinstance(word.lag_days, float)


def test_load_catalog_file_channel_guid_is_accepted(tmp_path: Path) -> None:
    text = '[apps.outlook]\nchannel = "a1e15c18-4d18-40b0-8577-616a9470bb10"\n'

    outlook = load_catalog(catalog_file(tmp_path, text))["outlook"]

    assert outlook.channel == "a1e15c18-4d18-40b0-8577-616a9470bb10"


def test_load_catalog_file_disabled_built_in_is_dropped(tmp_path: Path) -> None:
    text = "[apps.teams]\nenabled = false\n"

    catalog = load_catalog(catalog_file(tmp_path, text))

    assert "teams" not in catalog
    assert "teams" not in [app.name for app in select_apps(catalog, ())]


def test_load_catalog_file_disabled_unknown_app_changes_nothing(tmp_path: Path) -> None:
    text = "[apps.skype]\nenabled = false\n"

    assert load_catalog(catalog_file(tmp_path, text)) == load_catalog(None)


def test_load_catalog_file_onedrive_made_scheduled(tmp_path: Path) -> None:
    text = "[apps.onedrive]\non_demand = false\n"

    catalog = load_catalog(catalog_file(tmp_path, text))

    assert "onedrive" in [app.name for app in select_apps(catalog, ())]


@pytest.mark.parametrize(
    "text",
    [
        '[apps]\nremotehelp = { app_id = "MSRH01", name = "Remote Help" }\n',
        'apps.remotehelp.app_id = "MSRH01"\napps.remotehelp.name = "Remote Help"\n',
        '[apps."remotehelp"]\napp_id = "MSRH01"\nname = "Remote Help"\n',
    ],
    ids=["inline-table", "dotted-keys", "quoted-name"],
)
def test_load_catalog_file_other_toml_spellings_add_the_app(
    tmp_path: Path, text: str
) -> None:
    app = load_catalog(catalog_file(tmp_path, text))["remotehelp"]

    assert (app.app_id, app.display_name) == ("MSRH01", "Remote Help")


def test_load_catalog_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_catalog(catalog_file(tmp_path, "")) == load_catalog(None)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('[apps.word]\nlag_days = 3\nchannel = "beta\n', 3, "fix the TOML"),
        ("[apps.word]\n[apps.word]\n", 2, "fix the TOML"),
        ("\n\n[apps.word]\nlag = 3\n", 4, "unknown key lag"),
        (
            '[apps.word]\nlag_days = 3\n\n[apps.excel]\nchanel = "beta"\n',
            5,
            "unknown key chanel",
        ),
        ('[apps.word]\nlag_days = "two weeks"\n', 2, "lag_days must be a number"),
        ("[apps.word]\nlag_days = -1\n", 2, "lag_days must be a number"),
        ("[apps.word]\nlag_days = true\n", 2, "lag_days must be a number"),
        ("[apps.word]\nlag_days = nan\n", 2, "lag_days must be a number"),
        ("[apps.word]\nlag_days = inf\n", 2, "lag_days must be a number"),
        ("[apps.word]\nchannel = 3\n", 2, "channel must be a string"),
        ('[apps.word]\nchannel = "nightly"\n', 2, "unknown channel"),
        ('[apps.word]\nname = "Word"\napp_id = 5\n', 3, "app_id must be a string"),
        ('[apps.word]\napp_id = "../MSWD"\n', 2, "not a MAU application id"),
        ("[apps.word]\nname = 1\n", 2, "name must be a string"),
        ('[apps.teams]\nenabled = "false"\n', 2, "enabled must be true or false"),
        ("[apps.word]\non_demand = 1\n", 2, "on_demand must be true or false"),
        ('[apps.remotehelp]\nname = "Remote Help"\n', 1, "needs app_id and name"),
        ('\n[apps.Word]\napp_id = "MSWD2019"\n', 2, "a short name is"),
        ('[apps."../x"]\napp_id = "MSX01"\nname = "X"\n', 1, "a short name is"),
        ('[apps."word\\n"]\napp_id = "MSX01"\nname = "X"\n', 1, "a short name is"),
        ('[apps]\nword = "MSWD2019"\n', 2, "must be a table"),
        ("\n[app.word]\nlag_days = 3\n", 2, "not 'app'"),
        ("\nlag_days = 3\n", 2, "not 'lag_days'"),
        ("\napps = 3\n", 2, "not 'apps'"),
    ],
    ids=[
        "toml-syntax",
        "toml-duplicate-table",
        "unknown-key",
        "unknown-key-second-table",
        "lag-text",
        "lag-negative",
        "lag-boolean",
        "lag-nan",
        "lag-infinite",
        "channel-number",
        "channel-unknown",
        "app-id-number",
        "app-id-path",
        "name-number",
        "enabled-string",
        "on-demand-number",
        "new-app-without-id",
        "upper-case-name",
        "path-like-name",
        "name-with-newline",
        "app-not-a-table",
        "misspelt-apps-table",
        "top-level-key",
        "apps-not-a-table",
    ],
)
def test_load_catalog_bad_file_raises_settings_error_naming_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = catalog_file(tmp_path, text)

    with pytest.raises(SettingsError) as caught:
        load_catalog(path)

    assert str(caught.value).startswith(f"M365_CATALOG {path}")
    assert f"line {line}" in str(caught.value)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_load_catalog_missing_file_raises_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    with pytest.raises(SettingsError, match="cannot read it"):
        load_catalog(path)


def test_load_catalog_file_not_utf8_raises_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_bytes(b'[apps.word]\nname = "\xff"\n')

    with pytest.raises(SettingsError, match="cannot read it"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("word", True),
        ("remote-help_2", True),
        ("a" * 40, True),
        ("a" * 41, False),
        ("Word", False),
        ("../x", False),
        ("word\n", False),
        ("-word", False),
        ("", False),
    ],
    ids=[
        "plain",
        "dash-underscore-digit",
        "longest",
        "too-long",
        "upper-case",
        "path",
        "trailing-newline",
        "leading-dash",
        "empty",
    ],
)
def test_app_name_pattern_admits_only_plain_short_names(name: str, valid: bool) -> None:
    assert (APP_NAME.match(name) is not None) is valid
