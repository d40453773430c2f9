"""The app catalog: which Microsoft AutoUpdate apps the product stages, and how."""

import json
import math
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
# \Z, not $: "$" also matches before a final newline, and "word\n" is no short name.
_GUID = re.compile(r"^[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\Z")
MAX_LAG_DAYS = 3650.0  # ten years; also the ceiling of M365_LAG_DAYS
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}\Z")
_APP_ID = re.compile(r"^[A-Za-z0-9]{2,20}\Z")
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

    stray = sorted(set(document) - {"apps"})
    tables = document.get("apps", {})
    if stray or not isinstance(tables, dict):
        key = stray[0] if stray else "apps"
        raise SettingsError(
            f"M365_CATALOG {path}{_at(_top_line(text, key))}: only [apps.<name>] "
            f"tables belong here, not {key!r}"
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
    line = _line_of(text, name)

    def where(key: str | None = None) -> str:
        at = line if key is None else _key_line(text, line, key)
        return f"M365_CATALOG {path}{_at(at)} [apps.{name}]"

    if not isinstance(table, dict):
        raise SettingsError(f"{where()}: must be a table")
    if not APP_NAME.match(name):
        raise SettingsError(
            f"{where()}: a short name is lower-case letters, digits, - or _"
        )
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise SettingsError(
            f"{where(unknown[0])}: unknown key {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    for key in ("enabled", "on_demand"):
        if key in table and not isinstance(table[key], bool):
            raise SettingsError(f"{where(key)}: {key} must be true or false")

    if table.get("enabled", True) is False:
        catalog.pop(name, None)
        return
    base = catalog.get(name)
    if base is None and not {"app_id", "name"} <= set(table):
        raise SettingsError(f"{where()}: a new app needs app_id and name")
    try:
        catalog[name] = _merge(base or App(name, "", ""), table)
    except _BadValueError as exc:
        raise SettingsError(f"{where(exc.key)}: {exc}") from None


class _BadValueError(ValueError):
    """A value of a catalog table that is of the wrong type or out of range."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _merge(base: App, table: dict[str, object]) -> App:
    app_id = _text(table.get("app_id", base.app_id), "app_id")
    if not _APP_ID.match(app_id):
        raise _BadValueError(
            "app_id", f"app_id {app_id!r} is not a MAU application id such as MSWD2019"
        )
    channel = table.get("channel", base.channel)
    channel_name = None if channel is None else _text(channel, "channel")
    if channel_name is not None:
        try:
            channel_guid(channel_name)
        except SettingsError as exc:
            raise _BadValueError("channel", str(exc)) from None
    lag = table.get("lag_days", base.lag_days)
    if lag is not None and (
        isinstance(lag, bool)
        or not isinstance(lag, int | float)
        or not math.isfinite(lag)
        or not 0 <= lag <= MAX_LAG_DAYS
    ):
        raise _BadValueError(
            "lag_days", f"lag_days must be a number of days from 0 to {MAX_LAG_DAYS:g}"
        )
    return replace(
        base,
        app_id=app_id,
        display_name=_text(table.get("name", base.display_name), "name"),
        bundle_id=_text(table.get("bundle_id", base.bundle_id), "bundle_id"),
        channel=channel_name,
        lag_days=None if lag is None else float(lag),
        on_demand=bool(table.get("on_demand", base.on_demand)),
    )


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _BadValueError(key, f"{key} must be a string")
    return value.strip()


def _at(line: int | None) -> str:
    return "" if line is None else f" line {line}"


def _line_of(text: str, name: str) -> int | None:
    """Return the line that opens ``[apps.<name>]``, in any of TOML's spellings."""
    key = _key_pattern(name)
    patterns = (
        rf"^[ \t]*\[[ \t]*apps[ \t]*\.[ \t]*{key}[ \t]*\]",  # [apps.name]
        rf"^[ \t]*apps[ \t]*\.[ \t]*{key}[ \t]*[.=]",  # apps.name.key = ... (dotted)
        rf"^[ \t]*{key}[ \t]*=",  # name = { ... } under [apps]
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.M)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None


def _key_line(text: str, table_line: int | None, key: str) -> int | None:
    """Return the line of ``key`` inside the table that opens on ``table_line``."""
    if table_line is None:
        return None
    lines = text.splitlines()
    pattern = re.compile(rf"(^|[{{,.\s]){_key_pattern(key)}\s*=")
    for number in range(table_line, len(lines) + 1):
        line = lines[number - 1]
        if number > table_line and line.lstrip().startswith("["):
            break
        if pattern.search(line):
            return number
    return table_line


def _top_line(text: str, key: str) -> int | None:
    """Return the line of a top-level key or table that has no place in a catalog."""
    name = _key_pattern(key)
    pattern = rf"^[ \t]*(\[+[ \t]*{name}[ \t]*[.\]]|{name}[ \t]*[.=])"
    match = re.search(pattern, text, re.M)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _key_pattern(key: str) -> str:
    """Return a pattern for a TOML key as written: bare, quoted or with escapes."""
    escaped = json.dumps(key)[1:-1]  # TOML basic strings escape like JSON
    spellings = "|".join(re.escape(k) for k in dict.fromkeys((key, escaped)))
    return rf"""["']?(?:{spellings})["']?"""
