"""Settings read from the environment; their names are part of the product's interface."""

import base64
import ipaddress
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from m365_update_manager.catalog import MAX_LAG_DAYS, channel_guid
from m365_update_manager.errors import SettingsError
from m365_update_manager.logs import register_secrets

DEFAULT_FEED_BASE_URL = "https://res.public.onecdn.static.microsoft/mro1cdnstorage"
DEFAULT_ALLOWED_HOSTS = (
    "res.public.onecdn.static.microsoft",
    "teamsinstaller.public.onecdn.static.microsoft",
    "officecdnmac.microsoft.com",
    "officecdn.microsoft.com",
)
GIB = 1024**3
# A host name or an IPv4 address as M365_ALLOWED_HOSTS lists it: no scheme, port or path.
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_FRIENDLY = {
    "AZURE_STORAGE_CONTAINER": "must be 3 to 63 lower-case letters, digits or hyphens",
    "GITHUB_REPOSITORY": "must be owner/name",
}


def _is_host(value: str) -> bool:
    if ":" not in value:
        return _HOST.fullmatch(value) is not None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item for item in re.split(r"[,\s]+", value) if item]
    return value


class Settings(BaseSettings):
    """Every environment setting the two commands read, validated once at start."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        populate_by_name=False,
    )

    feed_base_url: str = Field(DEFAULT_FEED_BASE_URL, alias="M365_FEED_BASE_URL")
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_ALLOWED_HOSTS, alias="M365_ALLOWED_HOSTS"
    )
    apps: Annotated[tuple[str, ...], NoDecode] = Field((), alias="M365_APPS")
    channel: str | None = Field(None, alias="M365_CHANNEL")
    lag_days: float | None = Field(None, alias="M365_LAG_DAYS", ge=0, le=MAX_LAG_DAYS)
    catalog: Path | None = Field(None, alias="M365_CATALOG")
    now: datetime | None = Field(None, alias="M365_NOW")
    manifest: Path = Field(Path("manifest.json"), alias="M365_MANIFEST")
    max_package_bytes: int = Field(8 * GIB, alias="M365_MAX_PACKAGE_BYTES", gt=0)
    lock_timeout: float = Field(300.0, alias="M365_LOCK_TIMEOUT", ge=0)
    retry_seconds: float = Field(60.0, alias="M365_RETRY_SECONDS", gt=0)
    http_timeout: float = Field(30.0, alias="M365_HTTP_TIMEOUT", gt=0)
    block_size: int = Field(8 * 1024 * 1024, alias="M365_BLOCK_SIZE", ge=64 * 1024)
    upload_concurrency: int = Field(4, alias="M365_UPLOAD_CONCURRENCY", ge=1, le=32)

    connection_string: SecretStr | None = Field(
        None, alias="AZURE_STORAGE_CONNECTION_STRING"
    )
    account_url: str | None = Field(None, alias="AZURE_STORAGE_ACCOUNT_URL")
    container: str = Field(
        "m365-updates",
        alias="AZURE_STORAGE_CONTAINER",
        pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
    )
    store_dir: Path = Field(Path("blobstore"), alias="M365_STORE_DIR")

    github_token: SecretStr | None = Field(None, alias="GITHUB_TOKEN")
    github_repository: str | None = Field(
        None, alias="GITHUB_REPOSITORY", pattern=r"^[\w.-]+/[\w.-]+$"
    )
    github_branch: str | None = Field(None, alias="GITHUB_REF_NAME")
    github_api_url: str = Field("https://api.github.com", alias="GITHUB_API_URL")
    github_server_url: str = Field("https://github.com", alias="GITHUB_SERVER_URL")
    github_run_id: str | None = Field(None, alias="GITHUB_RUN_ID")
    step_summary: Path | None = Field(None, alias="GITHUB_STEP_SUMMARY")

    _split = field_validator("allowed_hosts", "apps", mode="before")(_split_commas)

    @field_validator("allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        hosts = tuple(host.lower().strip("[]") for host in hosts)
        if not hosts:
            raise ValueError("list at least one host name")
        bad = [host for host in hosts if not _is_host(host)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)} is not a plain host name (no scheme, port or path)"
            )
        return hosts

    @field_validator("feed_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL such as " + DEFAULT_FEED_BASE_URL)
        return value

    @field_validator("connection_string")
    @classmethod
    def _account_key_is_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for part in value.get_secret_value().split(";"):
            name, _, key = part.partition("=")
            if name.strip().lower() == "accountkey":
                try:
                    base64.b64decode(key.strip(), validate=True)
                except ValueError:
                    raise ValueError(
                        "its AccountKey is not valid base64; copy the connection "
                        "string again from the portal"
                    ) from None
        return value

    @model_validator(mode="after")
    def _feed_host_allowed(self) -> "Settings":
        host = (urlsplit(self.feed_base_url).hostname or "").lower()
        if host not in self.allowed_hosts:
            raise ValueError(
                f"M365_FEED_BASE_URL's host {host} is not in M365_ALLOWED_HOSTS; "
                "add it there"
            )
        return self

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                channel_guid(value)
            except SettingsError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("now", mode="before")
    @classmethod
    def _iso_time(cls, value: object) -> object:
        # pydantic alone would also read "1755000000" as a Unix time: ISO 8601 only.
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    "must be an ISO 8601 UTC time such as 2026-08-20T08:00:00Z"
                ) from None
        return value

    @field_validator("lag_days")
    @classmethod
    def _finite_lag(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of days")
        return value

    @field_validator("now")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def clock(self) -> datetime:
        """Return the time of this run: ``M365_NOW`` when set, else the real UTC time."""
        return self.now or datetime.now(UTC)

    def secret_values(self) -> list[str]:
        """Return the raw secret values so that logging can mask them."""
        secrets = [self.connection_string, self.github_token]
        return [s.get_secret_value() for s in secrets if s is not None]


def load_settings() -> Settings:
    """Read the settings from the environment or raise a ``SettingsError``."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    register_secrets(settings.secret_values())
    return settings


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch":
            message = _FRIENDLY.get(name, "has an unexpected form")
        problems.append(f"{name}: {message}" if name else message)
    return "bad setting " + "; ".join(problems) + " (fix the environment variable)"
