"""Tests of the environment settings: names, parsing, errors and secrets."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from m365_update_manager.errors import SettingsError
from m365_update_manager.logs import redact
from m365_update_manager.settings import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_FEED_BASE_URL,
    GIB,
    Settings,
    load_settings,
)

CONNECTION_STRING = (
    "DefaultEndpointsProtocol=https;AccountName=acct;"
    "AccountKey=c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWs=;EndpointSuffix=core.windows.net"
)
TOKEN = "ghp_SettingsTestToken0123456789abcdefXYZ"


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting at all, not even those the shared fixture sets for the commands."""
    for name in ("M365_MANIFEST", "M365_STORE_DIR", "M365_RETRY_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("M365_LOCK_TIMEOUT", "M365_BLOCK_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_load_settings_empty_environment_gives_documented_defaults(
    clean: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()

    assert settings.feed_base_url == DEFAULT_FEED_BASE_URL
    assert (
        settings.feed_base_url
        == "https://res.public.onecdn.static.microsoft/mro1cdnstorage"
    )
    assert settings.allowed_hosts == DEFAULT_ALLOWED_HOSTS
    assert "teamsinstaller.public.onecdn.static.microsoft" in settings.allowed_hosts
    assert (settings.apps, settings.channel, settings.lag_days) == ((), None, None)
    assert (settings.catalog, settings.now) == (None, None)
    assert settings.manifest == Path("manifest.json")
    assert settings.store_dir == Path("blobstore")
    assert settings.container == "m365-updates"
    assert settings.max_package_bytes == 8 * GIB
    assert (settings.connection_string, settings.account_url) == (None, None)
    assert (settings.github_token, settings.step_summary) == (None, None)


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        (
            "M365_FEED_BASE_URL",
            "http://127.0.0.1:8080/base",
            "feed_base_url",
            "http://127.0.0.1:8080/base",
        ),
        (
            "M365_ALLOWED_HOSTS",
            "127.0.0.1,localhost",
            "allowed_hosts",
            ("127.0.0.1", "localhost"),
        ),
        (
            "M365_ALLOWED_HOSTS",
            "Mirror.Example, [::1],localhost",
            "allowed_hosts",
            ("mirror.example", "::1", "localhost"),
        ),
        ("M365_APPS", "word,excel", "apps", ("word", "excel")),
        ("M365_APPS", "word excel  teams", "apps", ("word", "excel", "teams")),
        ("M365_APPS", " word , excel,,teams ", "apps", ("word", "excel", "teams")),
        ("M365_CHANNEL", "Preview", "channel", "Preview"),
        (
            "M365_CHANNEL",
            "4B2D7701-0A4F-49C8-B4CB-0C2D4043F51F",
            "channel",
            "4B2D7701-0A4F-49C8-B4CB-0C2D4043F51F",
        ),
        ("M365_LAG_DAYS", "0.5", "lag_days", 0.5),
        ("M365_LAG_DAYS", "2.25", "lag_days", 2.25),
        ("M365_LAG_DAYS", "0", "lag_days", 0.0),
        ("M365_LAG_DAYS", "14", "lag_days", 14.0),
        (
            "M365_CATALOG",
            "/etc/m365/catalog.toml",
            "catalog",
            Path("/etc/m365/catalog.toml"),
        ),
        (
            "M365_NOW",
            "2026-08-20T06:00:00Z",
            "now",
            datetime(2026, 8, 20, 6, tzinfo=UTC),
        ),
        (
            "M365_NOW",
            "2026-08-20T08:00:00+02:00",
            "now",
            datetime(2026, 8, 20, 6, tzinfo=UTC),
        ),
        (
            "M365_NOW",
            "2026-08-20T06:00:00",
            "now",
            datetime(2026, 8, 20, 6, tzinfo=UTC),
        ),
        ("M365_NOW", "2026-08-20", "now", datetime(2026, 8, 20, tzinfo=UTC)),
        (
            "M365_MANIFEST",
            "state/manifest.json",
            "manifest",
            Path("state/manifest.json"),
        ),
        ("M365_MAX_PACKAGE_BYTES", "1048576", "max_package_bytes", 1048576),
        ("M365_LOCK_TIMEOUT", "0", "lock_timeout", 0.0),
        ("M365_RETRY_SECONDS", "7.5", "retry_seconds", 7.5),
        ("M365_HTTP_TIMEOUT", "12", "http_timeout", 12.0),
        ("M365_BLOCK_SIZE", "65536", "block_size", 65536),
        ("M365_UPLOAD_CONCURRENCY", "8", "upload_concurrency", 8),
        ("M365_STORE_DIR", "/srv/blobs", "store_dir", Path("/srv/blobs")),
        (
            "AZURE_STORAGE_ACCOUNT_URL",
            "https://acct.blob.core.windows.net",
            "account_url",
            "https://acct.blob.core.windows.net",
        ),
        ("AZURE_STORAGE_CONTAINER", "mac-updates", "container", "mac-updates"),
        (
            "GITHUB_REPOSITORY",
            "contoso/mac-updates",
            "github_repository",
            "contoso/mac-updates",
        ),
        ("GITHUB_REF_NAME", "main", "github_branch", "main"),
        (
            "GITHUB_API_URL",
            "https://ghe.example/api/v3",
            "github_api_url",
            "https://ghe.example/api/v3",
        ),
        (
            "GITHUB_SERVER_URL",
            "https://ghe.example",
            "github_server_url",
            "https://ghe.example",
        ),
        ("GITHUB_RUN_ID", "123456", "github_run_id", "123456"),
        (
            "GITHUB_STEP_SUMMARY",
            "summary/step.md",
            "step_summary",
            Path("summary/step.md"),
        ),
    ],
    ids=[
        "feed-base-url",
        "allowed-hosts-one",
        "allowed-hosts-normalised",
        "apps-commas",
        "apps-spaces",
        "apps-mixed",
        "channel-name",
        "channel-guid",
        "lag-half-day",
        "lag-quarter",
        "lag-zero",
        "lag-whole",
        "catalog",
        "now-utc",
        "now-offset-to-utc",
        "now-naive-is-utc",
        "now-date-only",
        "manifest",
        "max-package-bytes",
        "lock-timeout",
        "retry-seconds",
        "http-timeout",
        "block-size",
        "upload-concurrency",
        "store-dir",
        "account-url",
        "container",
        "github-repository",
        "github-branch",
        "github-api-url",
        "github-server-url",
        "github-run-id",
        "step-summary",
    ],
)
def test_load_settings_each_variable_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    attribute: str,
    expected: object,
) -> None:
    monkeypatch.setenv(name, value)
    if name in COMPANIONS:
        companion, companion_value = COMPANIONS[name]
        monkeypatch.setenv(companion, companion_value)

    assert getattr(load_settings(), attribute) == expected


# The feed's host must be an allowed host: each of the two names the other's value.
COMPANIONS = {
    "M365_FEED_BASE_URL": ("M365_ALLOWED_HOSTS", "127.0.0.1"),
    "M365_ALLOWED_HOSTS": ("M365_FEED_BASE_URL", "http://localhost/base"),
}


def test_load_settings_feed_host_outside_allowed_hosts_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M365_FEED_BASE_URL", "https://mirror.example/mro1cdnstorage")

    with pytest.raises(SettingsError, match=r"M365_FEED_BASE_URL.*mirror\.example"):
        load_settings()


def test_load_settings_lower_case_variable_name_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("m365_lag_days", "3")

    assert load_settings().lag_days == 3.0


def test_load_settings_empty_variable_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M365_ALLOWED_HOSTS", "")
    monkeypatch.setenv("M365_LAG_DAYS", "")

    settings = load_settings()

    assert (settings.allowed_hosts, settings.lag_days) == (DEFAULT_ALLOWED_HOSTS, None)


def test_load_settings_secrets_are_secret_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION_STRING)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)

    settings = load_settings()

    assert isinstance(settings.connection_string, SecretStr)
    assert isinstance(settings.github_token, SecretStr)
    assert settings.connection_string.get_secret_value() == CONNECTION_STRING
    assert settings.github_token.get_secret_value() == TOKEN
    assert sorted(settings.secret_values()) == sorted([CONNECTION_STRING, TOKEN])


def test_load_settings_secrets_never_appear_in_repr_str_or_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION_STRING)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)

    settings = load_settings()

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert CONNECTION_STRING not in text
        assert "c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWs=" not in text
        assert TOKEN not in text


def test_load_settings_registers_secrets_for_log_redaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)

    load_settings()

    assert TOKEN not in redact(f"calling GitHub with {TOKEN}")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("M365_LAG_DAYS", "two weeks"),
        ("M365_LAG_DAYS", "-1"),
        ("M365_LAG_DAYS", "inf"),
        ("M365_LAG_DAYS", "nan"),
        ("M365_NOW", "next tuesday"),
        ("M365_NOW", "1755000000"),
        ("M365_NOW", "2026-13-01T00:00:00Z"),
        ("M365_CHANNEL", "nightly"),
        ("M365_ALLOWED_HOSTS", " , "),
        ("M365_ALLOWED_HOSTS", "https://mirror.example/"),
        ("M365_ALLOWED_HOSTS", "mirror.example:8443"),
        ("M365_FEED_BASE_URL", "res.public.onecdn.static.microsoft/mro1cdnstorage"),
        ("M365_FEED_BASE_URL", "ftp://mirror.example/base"),
        ("M365_MAX_PACKAGE_BYTES", "0"),
        ("M365_MAX_PACKAGE_BYTES", "8GB"),
        ("M365_RETRY_SECONDS", "0"),
        ("M365_HTTP_TIMEOUT", "-5"),
        ("M365_BLOCK_SIZE", "1024"),
        ("M365_UPLOAD_CONCURRENCY", "0"),
        ("M365_UPLOAD_CONCURRENCY", "33"),
        ("AZURE_STORAGE_CONTAINER", "Bad_Name"),
        ("GITHUB_REPOSITORY", "not a repository"),
    ],
    ids=[
        "lag-text",
        "lag-negative",
        "lag-infinite",
        "lag-nan",
        "now-prose",
        "now-unix-time",
        "now-month-13",
        "channel-unknown",
        "hosts-empty-list",
        "hosts-url",
        "hosts-port",
        "base-url-no-scheme",
        "base-url-ftp",
        "max-bytes-zero",
        "max-bytes-unit",
        "retry-zero",
        "timeout-negative",
        "block-size-small",
        "concurrency-zero",
        "concurrency-too-high",
        "container-bad",
        "repository-bad",
    ],
)
def test_load_settings_malformed_value_raises_settings_error_naming_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert name in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_load_settings_several_malformed_values_are_all_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M365_LAG_DAYS", "x")
    monkeypatch.setenv("M365_CHANNEL", "nightly")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert "M365_LAG_DAYS" in str(caught.value)
    assert "M365_CHANNEL" in str(caught.value)


@pytest.mark.parametrize(
    "malformed",
    ["M365_LAG_DAYS", "GITHUB_REPOSITORY", "M365_NOW", "M365_FEED_BASE_URL"],
    ids=["lag-days", "repository", "now", "base-url"],
)
def test_load_settings_error_never_shows_a_secret(
    monkeypatch: pytest.MonkeyPatch, malformed: str
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION_STRING)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv(malformed, TOKEN)  # a secret pasted into the wrong variable

    with pytest.raises(SettingsError) as caught:
        load_settings()

    for text in (str(caught.value), repr(caught.value)):
        assert TOKEN not in text
        assert CONNECTION_STRING not in text
        assert "AccountKey" not in text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_settings_clock_with_now_returns_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M365_NOW", "2026-08-20T06:00:00Z")

    assert load_settings().clock() == datetime(2026, 8, 20, 6, tzinfo=UTC)


def test_settings_clock_without_now_returns_the_current_utc_time() -> None:
    before = datetime.now(UTC)

    now = load_settings().clock()

    assert now.tzinfo is not None
    assert before - timedelta(seconds=1) <= now <= datetime.now(UTC)


def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.lag_days = 3  # type: ignore[misc]  # the point of the test


def test_settings_constructed_directly_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M365_APPS", "mau")

    assert Settings().apps == ("mau",)
