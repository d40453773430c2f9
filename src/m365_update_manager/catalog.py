"""The app catalog: which Microsoft AutoUpdate apps the product stages, and how."""

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from m365_update_manager.errors import SettingsError

# Channel GUIDs as Microsoft AutoUpdate names them (see docs on MAU channels).
CHANNELS = {
    "current": "C1297A47-86C4-4C1F-97FA-950631F94777",
    "preview": "1ac37578-5a24-40fb-892e-b89d85b6dfaa",
    "beta": "4B2D7701-0A4F-49C8-B4CB-0C2D4043F51F",
    "currentthrottle": "A1E15C18-4D18-40B0-8577-616A9470BB10",
}
_GUID = re.compile(r"^[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$")
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_APP_ID = re.compile(r"^[A-Za-z0-9]{2,20}$")
_KEYS = {"app_id", "name", "bundle_id", "channel", "lag_days", "enabled", "on_demand"}


@dataclass(frozen=True)
class App:
    """One catalog entry: the short name is also the blob name and manifest key."""

    name: str
    app_id: str
    display_name: str
    bundle_id: str = ""
    channel: str | None = None
    lag_days: float | None = None
    on_demand: bool = False


DEFAULT_APPS = (
    App("word", "MSWD2019", "Microsoft Word", "com.microsoft.Word"),
    App("excel", "XCEL2019", "Microsoft Excel", "com.microsoft.Excel"),
    App("powerpoint", "PPT32019", "Microsoft PowerPoint", "com.microsoft.Powerpoint"),
    App("outlook", "OPIM2019", "Microsoft Outlook", "com.microsoft.Outlook"),
    App("onenote", "ONMC2019", "Microsoft OneNote", "com.microsoft.onenote.mac"),
    App("teams", "TEAMS21", "Microsoft Teams", "com.microsoft.teams2"),
    App("mau", "MSau04", "Microsoft AutoUpdate", "com.microsoft.autoupdate2"),
    # OneDrive's MAU feed lags its own updater on purpose: staged only when named.
    App(
        "onedrive",
        "ONDR18",
        "Microsoft OneDrive",
        "com.microsoft.OneDrive",
        None,
        None,
        True,
    ),
    App("defender", "WDAV00", "Microsoft Defender", "com.microsoft.wdav"),
    App("companyportal", "IMCP01", "Company Portal", "com.microsoft.CompanyPortalMac"),
    App("windowsapp", "MSRD10", "Windows App", "com.microsoft.rdc.macos"),
)


def channel_guid(channel: str) -> str:
    """Return the GUID of a channel name (any case) or of a GUID given as is."""
    value = channel.strip()
    if value.lower() in CHANNELS:
        return CHANNELS[value.lower()]
    if _GUID.match(value):
        return value
    names = ", ".join(CHANNELS)
    raise SettingsError(f"unknown channel {channel!r}: use one of {names} or a GUID")


def load_catalog(path: Path | None) -> dict[str, App]:
    """Return the default catalog with the TOML file at ``path`` applied on top."""
    catalog = {app.name: app for app in DEFAULT_APPS}
    if path is None:
        return catalog

    text = _read(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"M365_CATALOG {path}: {exc}; fix the TOML") from None

    tables = document.get("apps", {})
    if not isinstance(tables, dict) or set(document) - {"apps"}:
        raise SettingsError(
            f"M365_CATALOG {path}: only [apps.<name>] tables belong here"
        )
    for name, table in tables.items():
        _apply(catalog, path, text, name, table)
    return catalog


def select_apps(
    catalog: dict[str, App], names: tuple[str, ...] | list[str]
) -> list[App]:
    """Return the apps named, or every app that is not on-demand when none is named."""
    if not names:
        return [app for app in catalog.values() if not app.on_demand]
    unknown = [name for name in names if name not in catalog]
    if unknown:
        known = ", ".join(catalog)
        raise SettingsError(
            f"unknown app {', '.join(unknown)}: the catalog has {known}"
        )
    return [catalog[name] for name in dict.fromkeys(names)]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"M365_CATALOG {path}: cannot read it ({exc})") from None


def _apply(
    catalog: dict[str, App], path: Path, text: str, name: str, table: object
) -> None:
    where = f"M365_CATALOG {path} line {_line_of(text, name)} [apps.{name}]"
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: must be a table")
    if not APP_NAME.match(name):
        raise SettingsError(
            f"{where}: a short name is lower-case letters, digits, - or _"
        )
    unknown = set(table) - _KEYS
    if unknown:
        raise SettingsError(f"{where}: unknown key {', '.join(sorted(unknown))}")

    if table.get("enabled", True) is False:
        catalog.pop(name, None)
        return
    base = catalog.get(name)
    if base is None and not {"app_id", "name"} <= set(table):
        raise SettingsError(f"{where}: a new app needs app_id and name")
    try:
        catalog[name] = _merge(base or App(name, "", ""), table)
    except (TypeError, ValueError, SettingsError) as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _merge(base: App, table: dict[str, object]) -> App:
    app_id = _text(table.get("app_id", base.app_id), "app_id")
    if not _APP_ID.match(app_id):
        raise ValueError(
            f"app_id {app_id!r} is not a MAU application id such as MSWD2019"
        )
    channel = table.get("channel", base.channel)
    if channel is not None:
        channel_guid(_text(channel, "channel"))
    lag = table.get("lag_days", base.lag_days)
    if lag is not None and (
        isinstance(lag, bool) or not isinstance(lag, int | float) or lag < 0
    ):
        raise ValueError("lag_days must be a number of days, 0 or more")
    return replace(
        base,
        app_id=app_id,
        display_name=_text(table.get("name", base.display_name), "name"),
        bundle_id=_text(table.get("bundle_id", base.bundle_id), "bundle_id"),
        channel=channel if channel is None else str(channel),
        lag_days=None if lag is None else float(lag),
        on_demand=bool(table.get("on_demand", base.on_demand)),
    )


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value.strip()


def _line_of(text: str, name: str) -> int:
    pattern = re.compile(rf"^\s*\[\s*apps\s*\.\s*\"?{re.escape(name)}\"?\s*\]", re.M)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else 1
