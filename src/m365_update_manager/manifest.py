"""``manifest.json``: the record of every app's builds and tiers, validated and versioned."""

import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from m365_update_manager.catalog import APP_NAME, App, channel_guid
from m365_update_manager.errors import ManifestError, SettingsError
from m365_update_manager.feed import package_file_name, version_key
from m365_update_manager.storage import build_blob

SCHEMA_VERSION = 2
HISTORY_LIMIT = 50
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def _build_number(value: str) -> str:
    version_key(value)
    return value


def _known_channel(value: str) -> str:
    try:
        channel_guid(value)
    except SettingsError as exc:
        raise ValueError(str(exc)) from None
    return value


def format_time(value: datetime) -> str:
    """Return a UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


Timestamp = Annotated[datetime, AfterValidator(_utc), PlainSerializer(format_time)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[
    str, Field(min_length=1, max_length=64), AfterValidator(_build_number)
]
Url = Annotated[str, Field(pattern=r"^https?://[^\s/]+/\S*$")]
BlobName = Annotated[
    str, Field(pattern=r"^builds/[a-z0-9_-]+/[0-9.]+/[^/\\\x00-\x1f\x7f]+\.pkg\z")
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class Tier(_Model):
    """A tier (staged, live or previous): which build its alias blob holds."""

    version: Version
    sha256: Sha256
    download_url: Url
    staged_at: Timestamp | None = None
    promoted_at: Timestamp | None = None


class Build(_Model):
    """A build kept under ``builds/``: the immutable source of every alias."""

    version: Version
    sha256: Sha256
    size: int = Field(ge=0)
    download_url: Url
    blob: BlobName
    first_seen: Timestamp
    blocked: bool = False


class FeedState(_Model):
    """The newest full build the feed offered at the last check, and since when."""

    version: Version
    download_url: Url
    seen_at: Timestamp
    chk: bool = True
    chk_misses: int = Field(0, ge=0)


class Hold(_Model):
    """A hold placed on an app: nothing is promoted until it is released."""

    reason: str
    since: Timestamp


class HistoryEntry(_Model):
    """One transition of an app: what moved, when, why and by which command."""

    at: Timestamp
    action: str
    from_version: str | None = None
    to_version: str | None = None
    reason: str = ""
    command: str = ""


class AppState(_Model):
    """Everything recorded for one app."""

    app_id: str
    name: str
    blob_name: str
    staged: Tier | None = None
    live: Tier | None = None
    previous: Tier | None = None
    builds: list[Build] = Field(default_factory=list)
    feed: FeedState | None = None
    hold: Hold | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    @classmethod
    def new(cls, app: App) -> "AppState":
        """Return the empty state of an app seen for the first time."""
        return cls(
            app_id=app.app_id, name=app.display_name, blob_name=f"{app.name}.pkg"
        )

    def build(self, version: str) -> Build | None:
        """Return the recorded build of ``version``, if any."""
        return next((b for b in self.builds if b.version == version), None)

    def record(self, entry: HistoryEntry) -> None:
        """Append a transition, keeping the most recent ``HISTORY_LIMIT``."""
        self.history = [*self.history, entry][-HISTORY_LIMIT:]


class Manifest(_Model):
    """The whole state file."""

    schema_version: Literal[2] = 2
    last_updated: Timestamp | None = None
    revision: int = Field(0, ge=0)
    channel: Annotated[str, AfterValidator(_known_channel)] = "current"
    lag_days: float = Field(14.0, ge=0, le=3650, allow_inf_nan=False)
    apps: dict[str, AppState] = Field(default_factory=dict)

    def dump(self) -> str:
        """Return the file's text: indented, keys sorted, one trailing newline."""
        data = self.model_dump(mode="json", exclude_none=False)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def content(self) -> dict[str, Any]:
        """Return the state without ``last_updated`` and ``revision``, to compare."""
        data = self.model_dump(mode="json")
        data.pop("last_updated", None)
        data.pop("revision", None)
        return data


def parse_manifest_text(text: str, source: str) -> Manifest:
    """Validate a manifest's text, upgrading the original design's shape.

    Raises ``ManifestError`` for broken JSON, an unknown schema version, placeholder
    values or an app name that is not a plain short name; nothing is written.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{source}: broken JSON at line {exc.lineno} ({exc.msg}); fix or restore it"
        ) from None
    except RecursionError:
        raise ManifestError(f"{source}: nested too deeply to be a manifest") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: the top level must be a JSON object")

    version = data.get("schema_version")
    if "schema_version" not in data:
        data = _upgrade(data, source)
    elif version != SCHEMA_VERSION or isinstance(version, bool):
        raise ManifestError(
            f"{source}: schema_version {version!r} is not one this release reads "
            f"({SCHEMA_VERSION}); upgrade m365-update-manager"
        )
    _check_app_names(data, source)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            f"{source}: {_first_problem(exc)}; fix the value or restore the file"
        ) from None


def _check_app_names(data: dict[str, Any], source: str) -> None:
    apps = data.get("apps", {})
    if not isinstance(apps, dict):
        raise ManifestError(f"{source}: 'apps' must be an object")
    for name in apps:
        if not APP_NAME.match(str(name)):
            raise ManifestError(
                f"{source}: app name {name!r} is not a plain short name such as 'word'"
            )


def _upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Turn the original design's manifest (no schema version) into schema 2."""
    upgraded = {**data, "schema_version": SCHEMA_VERSION}
    apps = data.get("apps", {})
    if not isinstance(apps, dict):
        raise ManifestError(f"{source}: 'apps' must be an object")
    upgraded["apps"] = {
        name: _upgrade_app(str(name), state) for name, state in apps.items()
    }
    return upgraded


def _upgrade_app(name: str, state: object) -> object:
    if not isinstance(state, dict):
        return state
    builds: dict[object, dict[str, Any]] = {}
    for tier in ("previous", "live", "staged"):
        entry = state.get(tier)
        if isinstance(entry, dict) and "version" in entry and "download_url" in entry:
            # One build per version: two tiers may name the same build.
            builds.setdefault(entry["version"], _legacy_build(name, entry))
    return {"builds": list(builds.values()), **state}


def _legacy_build(app: str, tier: dict[str, Any]) -> dict[str, Any]:
    seen = tier.get("staged_at") or tier.get("promoted_at")
    try:
        file_name = package_file_name(str(tier["download_url"]))
    except Exception:  # noqa: BLE001  # an unusable URL fails validation just below
        file_name = "unknown.pkg"
    return {
        "version": tier["version"],
        "sha256": tier.get("sha256"),
        "size": 0,
        "download_url": tier["download_url"],
        "blob": build_blob(app, str(tier["version"]), file_name),
        "first_seen": seen,
    }


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    hint = ""
    if "sha256" in where or "download_url" in where:
        hint = (
            " (a placeholder such as 'abc123...' or 'https://...' is not a real value)"
        )
    return f"{where}: {error['msg']}{hint}"


class ManifestFile:
    """The state file on disk: read once, written atomically only when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Manifest:
        """Return the file's manifest, or an empty one when the file does not exist."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Manifest()
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{self.path}: cannot read it ({exc})") from None
        return parse_manifest_text(text, str(self.path))

    def save(self, manifest: Manifest) -> None:
        """Write the manifest through a temporary file and an atomic rename.

        The temporary name is unique to this write, so that two writers never
        interleave in one file; it is removed when the write fails.
        """
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temp.open("x", encoding="utf-8") as handle:
                handle.write(manifest.dump())
                handle.flush()
                os.fsync(handle.fileno())
            temp.replace(self.path)
        except OSError as exc:
            raise ManifestError(
                f"{self.path}: cannot write it ({exc.strerror}); the store's copy "
                "state/manifest.json holds this run's state"
            ) from None
        finally:
            temp.unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Refuse, before any storage work, a state file that could not be written."""
        folder = self.path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ManifestError(
                f"{self.path}: its folder {folder} does not exist or is not writable; "
                "fix M365_MANIFEST"
            )


def merge(base: Manifest, ours: Manifest, theirs: Manifest) -> Manifest:
    """Re-apply this run's changes (``base`` to ``ours``) on top of ``theirs``.

    Field by field per app: a field this run changed takes this run's value, any
    other keeps what the other writer recorded. Builds merge one by one (keyed by
    version) the same way, so that a build blocked by another writer stays blocked
    while this run adds one; history entries from both survive.
    """
    merged = theirs.model_copy(deep=True)
    for key in ("channel", "lag_days"):
        if getattr(ours, key) != getattr(base, key):
            setattr(merged, key, getattr(ours, key))
    for name, state in ours.apps.items():
        removed = name not in theirs.apps and base.apps.get(name) == state
        if removed:  # the other writer dropped an app this run did not touch
            continue
        merged.apps[name] = _merge_app(
            base.apps.get(name), state, theirs.apps.get(name)
        )
    merged.last_updated = ours.last_updated
    merged.revision = ours.revision
    return merged


def _merge_app(
    base: AppState | None, ours: AppState, theirs: AppState | None
) -> AppState:
    if theirs is None:
        return ours.model_copy(deep=True)
    if base is None:  # both writers added the app: merge against an empty record
        base = AppState(app_id=ours.app_id, name=ours.name, blob_name=ours.blob_name)
    merged = theirs.model_copy(deep=True)
    for field in AppState.model_fields:
        if field in {"history", "builds"}:
            continue
        if getattr(ours, field) != getattr(base, field):
            setattr(merged, field, getattr(ours, field))
    merged.builds = _merge_builds(base.builds, ours.builds, theirs.builds)
    added = [entry for entry in ours.history if entry not in base.history]
    history = sorted([*theirs.history, *added], key=lambda entry: entry.at)
    merged.history = history[-HISTORY_LIMIT:]
    return merged


def _merge_builds(
    base: list[Build], ours: list[Build], theirs: list[Build]
) -> list[Build]:
    """Merge three versions of the build list, one build (by version) at a time."""
    old = {b.version: b for b in base}
    mine = {b.version: b for b in ours}
    other = {b.version: b for b in theirs}
    merged = []
    for version in {*mine, *other}:
        if version not in other:  # theirs dropped it, or only this run has it
            keep = version not in old or mine[version] != old[version]
            merged += [mine[version]] if keep else []
        elif version not in mine:  # this run dropped it, or only theirs has it
            keep = version not in old or other[version] != old[version]
            merged += [other[version]] if keep else []
        elif version not in old:
            merged.append(mine[version])
        else:
            merged.append(_merge_fields(old[version], mine[version], other[version]))
    return sorted(merged, key=lambda build: version_key(build.version))


def _merge_fields(base: Build, ours: Build, theirs: Build) -> Build:
    changed = {
        field: getattr(ours, field)
        for field in Build.model_fields
        if getattr(ours, field) != getattr(base, field)
    }
    return theirs.model_copy(update=changed, deep=True)


SAFE_TEXT = re.compile(r"[\x00-\x1f]")


def clean_reason(text: str) -> str:
    """Return a reason given on the command line as one short printable line."""
    return SAFE_TEXT.sub(" ", text).strip()[:500]
