"""Shared fixtures: a local CDN serving the fixture feeds, Azurite, a clean environment."""

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import stamina

from tests.support.azurite import Azurite, find_azurite
from tests.support.cdn import CDN

FIXTURES = Path(__file__).parent / "fixtures"
FEEDS = FIXTURES / "feeds"
CURRENT = "C1297A47-86C4-4C1F-97FA-950631F94777"
REAL_HOSTS = re.compile(
    rb"https://(res\.public\.onecdn\.static\.microsoft|teamsinstaller\.public\.onecdn\.static\.microsoft)"
)
DEFAULT_APPS = {
    "word": "MSWD2019",
    "excel": "XCEL2019",
    "powerpoint": "PPT32019",
    "outlook": "OPIM2019",
    "onenote": "ONMC2019",
    "teams": "TEAMS21",
    "mau": "MSau04",
    "defender": "WDAV00",
    "companyportal": "IMCP01",
    "windowsapp": "MSRD10",
}


@dataclass
class Package:
    """A package the local CDN serves for one app."""

    app: str
    version: str
    path: str
    body: bytes

    @property
    def sha256(self) -> str:
        """Return the body's SHA-256."""
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class Feeds:
    """The fixture feeds served by the local CDN, with generated package bodies."""

    cdn: CDN
    packages: dict[str, Package]

    def feed_path(self, app_id: str, suffix: str = ".xml") -> str:
        """Return the path of an app's manifest (or ``-chk.xml``) on the CDN."""
        return f"/mro1cdnstorage/{CURRENT}/MacAutoupdate/0409{app_id}{suffix}"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test starts with no product setting, inside its own folder."""
    for name in list(os.environ):
        if name.startswith(("M365_", "AZURE_", "GITHUB_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M365_MANIFEST", str(tmp_path / "manifest.json"))
    monkeypatch.setenv("M365_STORE_DIR", str(tmp_path / "blobstore"))
    monkeypatch.setenv("M365_RETRY_SECONDS", "3")
    monkeypatch.setenv("M365_LOCK_TIMEOUT", "2")
    monkeypatch.setenv("M365_BLOCK_SIZE", "65536")
    stamina.set_testing(True, attempts=3)
    return tmp_path


@pytest.fixture
def cdn() -> Iterator[CDN]:
    """A local HTTP server standing in for Microsoft's CDN."""
    server = CDN()
    yield server
    server.close()


def package_body(app: str, size: int) -> bytes:
    """Return deterministic bytes standing in for a package."""
    seed = hashlib.sha256(app.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@pytest.fixture
def feeds(cdn: CDN, monkeypatch: pytest.MonkeyPatch) -> Feeds:
    """Serve every fixture feed with its URLs pointed at the local CDN."""
    packages = {}
    local = cdn.base.encode()
    for path in sorted(FEEDS.glob("*.xml")):
        data = REAL_HOSTS.sub(lambda m: local + b"/" + m.group(1), path.read_bytes())
        cdn.add(f"/mro1cdnstorage/{CURRENT}/MacAutoupdate/{path.name}", data)
    for app, app_id in DEFAULT_APPS.items():
        manifest = cdn.state.files[
            f"/mro1cdnstorage/{CURRENT}/MacAutoupdate/0409{app_id}.xml"
        ]
        packages[app] = _package_for(cdn, app, manifest)
    monkeypatch.setenv("M365_FEED_BASE_URL", cdn.url("/mro1cdnstorage"))
    monkeypatch.setenv("M365_ALLOWED_HOSTS", "127.0.0.1")
    return Feeds(cdn, packages)


def _package_for(cdn: CDN, app: str, manifest: bytes) -> Package:
    from m365_update_manager.feed import parse_manifest

    full = parse_manifest(manifest, app)
    path = full.url.removeprefix(cdn.base)
    body = package_body(app, 150_000 + len(app) * 1000)
    cdn.add(path, body)
    return Package(app, full.version, path, body)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for the session (``azurite-blob`` must be installed)."""
    command = find_azurite()
    if command is None:
        pytest.fail(
            "azurite-blob is not installed: run .ci/run or 'npm install azurite@3.35.0'"
        )
    server = Azurite(command, tmp_path_factory.mktemp("azurite") / "azurite.log")
    yield server
    server.stop()


@pytest.fixture(params=["local", "azurite"])
def store_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once on the local folder store and once on Azurite."""
    if request.param == "azurite":
        server = request.getfixturevalue("azurite")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
        monkeypatch.setenv("AZURE_STORAGE_CONTAINER", f"t{uuid.uuid4().hex[:20]}")
    return str(request.param)
