"""Microsoft AutoUpdate feed client: ``-chk.xml`` pointers and full-package manifests."""

import logging
import plistlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from urllib.parse import unquote, urlsplit
from xml.etree.ElementTree import ParseError
from xml.parsers.expat import ExpatError

import defusedxml
import defusedxml.ElementTree
import requests

from m365_update_manager.catalog import App, channel_guid
from m365_update_manager.errors import FeedError
from m365_update_manager.net import (
    Document,
    PolicySession,
    TransientHTTPError,
    check_url,
    get_document,
    short_reason,
)

log = logging.getLogger(__name__)

MAX_FEED_BYTES = 4 * 1024 * 1024
UNKNOWN_VERSION = "99999"  # the -chk.xml sentinel for "no version known"
DELTA_MARKERS = ("_to_", "Delta", "BinaryDelta")
NO_CHK_STATUS = frozenset({400, 404})
LOCALE = "0409"  # en-US; every MAU tool uses it
MAX_FILE_NAME = 200  # bytes; the longest real name is under 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# How a full-package candidate ranks among those of the same build (see parse_manifest).
Rank = tuple[int, tuple[int, ...], str]


@dataclass(frozen=True)
class FeedPackage:
    """The full package a feed offers for one app: its build, URL and metadata."""

    app_id: str
    version: str
    url: str
    size_hint: int | None = None
    title: str = ""
    date: datetime | None = None
    minimum_os: str | None = None
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def file_name(self) -> str:
        """Return the package's original file name, taken from its URL."""
        return package_file_name(self.url)


def version_key(version: str) -> tuple[int, ...]:
    """Return a build number as a tuple of integers, for comparing builds."""
    parts = version.strip().split(".")
    # str.isdigit() also admits non-ASCII digits (superscripts, Arabic-Indic): refuse.
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(f"{version!r} is not a build number such as 16.112.26081720")
    return tuple(int(part) for part in parts)


def package_file_name(url: str) -> str:
    """Return the last path segment of a package URL, refusing anything but a plain name."""
    try:
        path = urlsplit(url).path
    except ValueError:
        raise FeedError(f"refused {url!r}: not a URL") from None
    name = unquote(path.rsplit("/", 1)[-1])
    plain = (
        name.endswith(".pkg")
        and not name.startswith(".")
        and len(name.encode()) <= MAX_FILE_NAME
        and not any(c in name for c in "/\\")
        and not _CONTROL.search(name)
    )
    if not plain:
        raise FeedError(f"refused {url!r}: not a plain .pkg file name")
    return name


def load_plist(data: bytes, source: str) -> object:
    """Parse an XML property list, refusing entities, external references and bombs."""
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(
            f"{source}: larger than {MAX_FEED_BYTES} bytes, not a feed file"
        )
    try:
        defusedxml.ElementTree.fromstring(data)
    except defusedxml.DefusedXmlException as exc:
        raise FeedError(f"{source}: refused, the XML declares {_what(exc)}") from None
    except (ParseError, LookupError) as exc:  # LookupError: an unknown encoding
        raise FeedError(f"{source}: malformed XML ({exc})") from None

    try:
        return plistlib.loads(data, fmt=plistlib.FMT_XML)
    except (
        plistlib.InvalidFileException,
        ValueError,
        ExpatError,
        TypeError,
        AttributeError,  # plistlib's <date> parser on a value that is not a date
    ) as exc:
        raise FeedError(f"{source}: not a property list ({exc})") from None


def _what(exc: defusedxml.DefusedXmlException) -> str:
    if isinstance(exc, defusedxml.ExternalReferenceForbidden):
        return "an external reference"
    if isinstance(exc, defusedxml.DTDForbidden):
        return "a document type"
    return "an entity (entity declarations are not allowed)"


def parse_chk(data: bytes, source: str) -> str | None:
    """Return the build a ``-chk.xml`` points at, or None when it says ``99999``."""
    document = _strip(load_plist(data, source))
    if not isinstance(document, dict):
        raise FeedError(f"{source}: expected a dict at the root of a -chk.xml")

    version = document.get("Update Version")
    if version is None or str(version) == UNKNOWN_VERSION:
        return None
    return _checked_version(str(version), source)


def parse_manifest(data: bytes, source: str) -> FeedPackage:
    """Return the newest full package a ``0409<ID>.xml`` manifest offers.

    Chosen by meaning, never by position: the full package is the ``Location`` of a
    dict without ``Baseline Version``, or the ``FullUpdaterLocation`` of a delta dict.
    Raises ``FeedError`` when there is none, or when any full package offered for
    the newest build looks like a delta or is not a ``.pkg``.
    """
    document = _strip(load_plist(data, source))
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list) or not all(isinstance(d, dict) for d in document):
        raise FeedError(f"{source}: expected an array of dicts at the root")

    candidates = [c for entry in document for c in _full_candidates(entry, source)]
    if not candidates:
        raise FeedError(f"{source}: no full package in the manifest (only deltas?)")
    top = max(version_key(package.version) for _, package in candidates)
    newest = [(rank, p) for rank, p in candidates if version_key(p.version) == top]
    for _, package in newest:
        _validated(package, source)
    chosen = max(newest, key=lambda candidate: candidate[0])[1]
    if len({package.url for _, package in newest}) > 1:
        log.warning(
            "%s: the dicts of %s name different full packages; taking %s",
            source,
            chosen.version,
            chosen.url,
        )
    return chosen


def _full_candidates(
    entry: dict[str, object], source: str
) -> list[tuple[Rank, FeedPackage]]:
    """Return the entry's full packages, each with a rank that ignores dict order.

    The full dict's own ``Location`` ranks above a delta dict's
    ``FullUpdaterLocation``; among delta dicts the newest baseline ranks first, so
    that the chosen package (and its ``extra``) never depends on position.
    """
    version = entry.get("Update Version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str):
        return []
    version = _checked_version(version, source)
    baseline = entry.get("Baseline Version")
    urls = []
    if baseline is None and isinstance(entry.get("Location"), str):
        urls.append((1, str(entry["Location"])))
    if isinstance(entry.get("FullUpdaterLocation"), str):
        urls.append((0, str(entry["FullUpdaterLocation"])))
    return [
        ((full, _baseline_rank(baseline), url), _package(entry, version, url))
        for full, url in urls
    ]


def _baseline_rank(baseline: object) -> tuple[int, ...]:
    try:
        return version_key(str(baseline)) if baseline is not None else ()
    except ValueError:
        return ()


def _package(entry: dict[str, object], version: str, url: str) -> FeedPackage:
    known = {"Application ID", "Title", "Date", "Minimum OS", "Minimum OS Version"}
    extra = {k: v for k, v in entry.items() if k not in known}
    date = entry.get("Date")
    minimum_os = entry.get("Minimum OS", entry.get("Minimum OS Version"))
    return FeedPackage(
        app_id=str(entry.get("Application ID", "")),
        version=version,
        url=url,
        size_hint=_int_or_none(entry.get("FullUpdaterSize")),
        title=str(entry.get("Title", "")),
        date=date if isinstance(date, datetime) else None,
        minimum_os=None if minimum_os is None else str(minimum_os),
        extra=MappingProxyType(extra),
    )


def _validated(package: FeedPackage, source: str) -> FeedPackage:
    if any(marker in package.url for marker in DELTA_MARKERS):
        raise FeedError(
            f"{source}: the full package of {package.version} points at a delta "
            f"({package.url}); refusing to stage it"
        )
    try:
        package_file_name(package.url)
    except FeedError as exc:
        raise FeedError(f"{source}: {exc}") from None
    return package


def _checked_version(version: str, source: str) -> str:
    try:
        version_key(version)
    except ValueError as exc:
        raise FeedError(f"{source}: {exc}") from None
    return version.strip()


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _strip(value: object) -> object:
    """Strip whitespace from every string: padded ``Location`` values were published."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_strip(item) for item in value]
    if isinstance(value, dict):
        return {str(key).strip(): _strip(item) for key, item in value.items()}
    return value


class FeedClient:
    """Reads an app's ``-chk.xml`` and manifest from a channel of the MAU feed."""

    def __init__(
        self,
        session: PolicySession,
        base_url: str,
        retry_seconds: float,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.retry_seconds = retry_seconds
        self.unreachable: set[str] = set()

    def manifest_url(self, app: App, channel: str) -> str:
        """Return the URL of the app's manifest on a channel."""
        guid = channel_guid(channel)
        return f"{self.base_url}/{guid}/MacAutoupdate/{LOCALE}{app.app_id}.xml"

    def fetch_chk(self, app: App, channel: str) -> tuple[bool, str | None]:
        """Return (whether a ``-chk.xml`` exists, the build it points at or None)."""
        url = self.manifest_url(app, channel).removesuffix(".xml") + "-chk.xml"
        document = self._get(url)
        if document.status in NO_CHK_STATUS:
            return False, None
        self._require_ok(document.status, url)
        return True, parse_chk(document.body, url)

    def fetch_latest(self, app: App, channel: str) -> FeedPackage:
        """Return the newest full package the app's manifest offers."""
        url = self.manifest_url(app, channel)
        document = self._get(url)
        self._require_ok(document.status, url)
        package = parse_manifest(document.body, url)
        check_url(package.url, self.session.allowed_hosts)
        return package

    def _get(self, url: str) -> Document:
        """Fetch a feed file; a host that could not be reached is not waited on twice."""
        host = urlsplit(url).hostname or ""
        if host in self.unreachable:
            raise FeedError(
                f"cannot fetch {url}: {host} could not be reached earlier in this run; "
                "check the network or M365_FEED_BASE_URL"
            )
        try:
            return get_document(self.session, url, self.retry_seconds, MAX_FEED_BYTES)
        except (requests.ConnectionError, requests.Timeout) as exc:
            self.unreachable.add(host)
            raise FeedError(
                f"cannot fetch {url}: {short_reason(exc)}; check the network "
                "or M365_FEED_BASE_URL"
            ) from exc
        except (requests.RequestException, TransientHTTPError) as exc:
            raise FeedError(
                f"cannot fetch {url}: {short_reason(exc)}; check the network "
                "or M365_FEED_BASE_URL"
            ) from exc

    @staticmethod
    def _require_ok(status: int, url: str) -> None:
        if status != 200:
            raise FeedError(
                f"{url} answered HTTP {status}; check M365_FEED_BASE_URL, the "
                "channel and the app id"
            )
