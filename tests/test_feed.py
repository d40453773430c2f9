"""Tests of MAU feed parsing (manifests and ``-chk.xml``) and of the feed client."""

import itertools
import plistlib
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import defusedxml.ElementTree
import pytest

from m365_update_manager.catalog import App
from m365_update_manager.errors import FeedError, URLPolicyError
from m365_update_manager.feed import (
    MAX_FEED_BYTES,
    FeedClient,
    FeedPackage,
    load_plist,
    package_file_name,
    parse_chk,
    parse_manifest,
    version_key,
)
from m365_update_manager.net import PolicySession
from tests.conftest import CURRENT, FEEDS, Feeds
from tests.support.cdn import CDN, redirect, status

BASE = (
    f"https://res.public.onecdn.static.microsoft/mro1cdnstorage/{CURRENT}/MacAutoupdate"
)
TEAMS = "https://teamsinstaller.public.onecdn.static.microsoft/production-osx/26213.1006.5011.1671"
OFFICE = "16.112.26081720"

# Every manifest fixture: (newest full build, its package URL, size hint).
MANIFESTS = {
    "0409IMCP01.xml": (
        "53.2607303.000",
        f"{BASE}/CompanyPortal_5.2606.0-Upgrade.pkg",
        88740,
    ),
    "0409MSRD10.xml": ("3078", f"{BASE}/Windows_App_11.4.0_updater.pkg", 98760),
    "0409MSRH01.xml": (
        "1.0.2606021",
        f"{BASE}/Microsoft_Remote_Help_1.0.2606021_updater.pkg",
        40551,
    ),
    "0409MSWD2019.xml": (
        OFFICE,
        f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg",
        1358465,
    ),
    "0409MSau04.xml": (
        "4.85.26080216",
        f"{BASE}/Microsoft_AutoUpdate_4.85.26080216_Updater.pkg",
        23110,
    ),
    "0409ONMC2019.xml": (
        OFFICE,
        f"{BASE}/Microsoft_OneNote_{OFFICE}_Updater.pkg",
        903112,
    ),
    "0409OPIM2019.xml": (
        OFFICE,
        f"{BASE}/Microsoft_Outlook_{OFFICE}_Updater.pkg",
        1318143,
    ),
    "0409PPT32019.xml": (
        OFFICE,
        f"{BASE}/Microsoft_PowerPoint_{OFFICE}_Updater.pkg",
        1201987,
    ),
    "0409TEAMS21.xml": ("26213.1006.5011.1671", f"{TEAMS}/MicrosoftTeams.pkg", 251770),
    "0409WDAV00.xml": ("101.26062.0012", f"{BASE}/wdav-upgrade.pkg", 131002),
    "0409XCEL2019.xml": (
        OFFICE,
        f"{BASE}/Microsoft_Excel_{OFFICE}_Updater.pkg",
        1301220,
    ),
}
CHKS = {
    "0409IMCP01-chk.xml": "53.2607303.000",
    "0409MSRD10-chk.xml": "3078",
    "0409MSWD2019-chk.xml": OFFICE,
    "0409MSau04-chk.xml": "4.85.26080216",
    "0409ONMC2019-chk.xml": OFFICE,
    "0409OPIM2019-chk.xml": OFFICE,
    "0409PPT32019-chk.xml": OFFICE,
    "0409TEAMS21-chk.xml": "26213.1006.5011.1671",
    "0409WDAV00-chk.xml": "101.26062.0012",
    "0409XCEL2019-chk.xml": OFFICE,
}
WORD = App("word", "MSWD2019", "Microsoft Word")
REMOTE_HELP = App("remotehelp", "MSRH01", "Remote Help")
HOSTILE_SOURCE = "https://feed.example/0409MSWD2019.xml"


def fixture(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


def plist(document: Any) -> bytes:
    return plistlib.dumps(document, fmt=plistlib.FMT_XML)


def full_dict(version: str, url: str, **extra: object) -> dict[str, object]:
    return {
        "Application ID": "MSWD2019",
        "Update Version": version,
        "Location": url,
        **extra,
    }


def delta_dict(version: str, baseline: str, full_url: str) -> dict[str, object]:
    return {
        "Application ID": "MSWD2019",
        "Update Version": version,
        "Baseline Version": baseline,
        "Location": f"{BASE}/Word_{baseline}_to_{version}_Delta.pkg",
        "BinaryUpdaterLocation": f"{BASE}/Word_{baseline}_to_{version}_BinaryDelta.pkg",
        "FullUpdaterLocation": full_url,
    }


def test_fixture_tables_cover_every_feed_fixture() -> None:
    names = {path.name for path in FEEDS.glob("*.xml")}

    assert names == set(MANIFESTS) | set(CHKS)


@pytest.mark.parametrize(
    ("name", "expected"), MANIFESTS.items(), ids=[n[4:-4] for n in MANIFESTS]
)
def test_parse_manifest_fixture_gives_newest_full_package(
    name: str, expected: tuple[str, str, int]
) -> None:
    version, url, size = expected

    package = parse_manifest(fixture(name), name)

    assert (package.version, package.url, package.size_hint) == (version, url, size)
    assert package.app_id == name[4:-4]
    assert package.file_name == url.rsplit("/", 1)[-1]
    assert not any(marker in package.url for marker in ("_to_", "Delta"))


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("0409TEAMS21.xml", "MicrosoftTeams.pkg"),
        ("0409MSWD2019.xml", "Microsoft_Word_16.112.26081720_Updater.pkg"),
        ("0409WDAV00.xml", "wdav-upgrade.pkg"),
        ("0409IMCP01.xml", "CompanyPortal_5.2606.0-Upgrade.pkg"),
        ("0409MSRD10.xml", "Windows_App_11.4.0_updater.pkg"),
    ],
    ids=["teams-not-binary-delta", "word", "defender", "company-portal", "windows-app"],
)
def test_parse_manifest_notable_fixture_picks_named_file(
    name: str, file_name: str
) -> None:
    assert parse_manifest(fixture(name), name).file_name == file_name


def test_parse_manifest_word_fixture_keeps_metadata_of_the_full_dict() -> None:
    package = parse_manifest(fixture("0409MSWD2019.xml"), "word")

    assert package.title == "Microsoft Word Update 16.112.1 (26081720)"
    assert package.minimum_os == "14.0"
    assert package.date == datetime(2026, 8, 17, 8, 0)
    assert "Baseline Version" not in package.extra
    assert package.extra["Location"] == package.url


def test_parse_manifest_company_portal_reads_minimum_os_version_key() -> None:
    package = parse_manifest(fixture("0409IMCP01.xml"), "companyportal")

    assert package.minimum_os == "11.0"


@pytest.mark.parametrize(("name", "version"), CHKS.items(), ids=[n[4:-8] for n in CHKS])
def test_parse_chk_fixture_gives_update_version(name: str, version: str) -> None:
    assert parse_chk(fixture(name), name) == version


@pytest.mark.parametrize("name", CHKS, ids=[n[4:-8] for n in CHKS])
def test_parse_chk_fixture_agrees_with_its_manifest(name: str) -> None:
    manifest = name.replace("-chk.xml", ".xml")

    assert (
        parse_chk(fixture(name), name)
        == parse_manifest(fixture(manifest), manifest).version
    )


@pytest.mark.parametrize(
    "value",
    ["99999", " 99999\n", 99999],
    ids=["string", "padded-string", "integer"],
)
def test_parse_chk_sentinel_version_returns_none(value: object) -> None:
    data = plist(
        {"Date": datetime(2026, 8, 1), "Type": "Production", "Update Version": value}
    )

    assert parse_chk(data, "chk") is None


def test_parse_chk_without_update_version_returns_none() -> None:
    assert parse_chk(plist({"Type": "Production"}), "chk") is None


def test_parse_chk_integer_build_returns_it_as_text() -> None:
    assert parse_chk(plist({"Update Version": 3078}), "chk") == "3078"


def test_parse_chk_padded_version_is_stripped() -> None:
    assert parse_chk(plist({"Update Version": f"\n  {OFFICE}  "}), "chk") == OFFICE


@pytest.mark.parametrize(
    "document",
    [[{"Update Version": OFFICE}], "16.1", {"Update Version": "16.x"}],
    ids=["array-root", "string-root", "not-a-build"],
)
def test_parse_chk_wrong_shape_raises_feed_error_naming_source(
    document: object,
) -> None:
    with pytest.raises(FeedError, match=r"^chk-source: "):
        parse_chk(plist(document), "chk-source")


@pytest.mark.parametrize(
    "name",
    ["0409MSWD2019.xml", "0409OPIM2019.xml", "0409TEAMS21.xml", "0409MSRD10.xml"],
    ids=["word", "outlook", "teams", "windows-app"],
)
def test_parse_manifest_any_dict_order_gives_same_package(name: str) -> None:
    dicts = plistlib.loads(fixture(name))
    expected = parse_manifest(fixture(name), name)

    results = [
        parse_manifest(plist(list(order)), name)
        for order in itertools.permutations(dicts)
    ]

    assert all(result == expected for result in results)


def test_parse_manifest_deltas_only_takes_full_updater_location_in_any_order() -> None:
    full = f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg"
    dicts = [
        delta_dict(OFFICE, "16.111.26072014", full),
        delta_dict(OFFICE, "16.112.26081010", full),
        delta_dict(OFFICE, "16.109.26053122", full),
    ]

    results = [
        parse_manifest(plist(list(order)), "word")
        for order in itertools.permutations(dicts)
    ]

    assert all(result == results[0] for result in results)
    assert results[0].url == full
    assert results[0].extra["Baseline Version"] == "16.112.26081010"


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("16.9.1", "16.10.1"),
        ("16.99.26081720", "16.100.1"),
        ("4.9", "4.10"),
        ("1.0.9", "1.0.10"),
        ("999", "1000"),
        ("16.10", "16.10.1"),
    ],
    ids=[
        "minor-9-vs-10",
        "minor-99-vs-100",
        "two-parts",
        "patch",
        "bare-build",
        "longer",
    ],
)
def test_parse_manifest_highest_update_version_compared_as_integers(
    older: str, newer: str
) -> None:
    dicts = [
        full_dict(newer, f"{BASE}/Microsoft_Word_{newer}_Updater.pkg"),
        full_dict(older, f"{BASE}/Microsoft_Word_{older}_Updater.pkg"),
    ]

    for order in (dicts, dicts[::-1]):
        assert parse_manifest(plist(order), "word").version == newer


def test_parse_manifest_padded_strings_are_stripped() -> None:
    url = f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg"
    document = [full_dict(f" {OFFICE}\n", f"\n      {url}\n   ", Title="  Word  ")]

    package = parse_manifest(plist(document), "word")

    assert (package.version, package.url, package.title) == (OFFICE, url, "Word")


def test_parse_manifest_unknown_keys_are_kept_in_extra() -> None:
    url = f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg"
    document = [
        full_dict(OFFICE, url, **{"Brand New Key": {"nested": [1, 2]}, "LCID": 1033})
    ]

    package = parse_manifest(plist(document), "word")

    assert package.extra["Brand New Key"] == {"nested": [1, 2]}
    assert package.extra["LCID"] == 1033
    assert package.extra["Update Version"] == OFFICE


def test_parse_manifest_missing_optional_keys_are_tolerated() -> None:
    url = f"{BASE}/wdav-upgrade.pkg"

    package = parse_manifest(plist([{"Update Version": "101.1", "Location": url}]), "x")

    assert package == FeedPackage(
        app_id="",
        version="101.1",
        url=url,
        extra=package.extra,
    )
    assert (package.size_hint, package.title, package.date, package.minimum_os) == (
        None,
        "",
        None,
        None,
    )


def test_parse_manifest_integer_update_version_is_read_as_a_build() -> None:
    url = f"{BASE}/Windows_App_11.4.0_updater.pkg"

    package = parse_manifest(plist([{"Update Version": 3078, "Location": url}]), "x")

    assert package.version == "3078"


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1358465, 1358465), ("1358465", 1358465), (True, None), ("big", None)],
    ids=["integer", "digit-string", "boolean", "text"],
)
def test_parse_manifest_size_hint_only_from_a_whole_number(
    size: object, expected: int | None
) -> None:
    url = f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg"
    document = [full_dict(OFFICE, url, FullUpdaterSize=size)]

    assert parse_manifest(plist(document), "word").size_hint == expected


def test_parse_manifest_dict_root_is_read_as_one_entry() -> None:
    url = f"{BASE}/Microsoft_AutoUpdate_4.85.26080216_Updater.pkg"

    package = parse_manifest(plist(full_dict("4.85.26080216", url)), "mau")

    assert (package.version, package.url) == ("4.85.26080216", url)


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/Word_16.111.26072014_to_{OFFICE}.pkg",
        f"{BASE}/Word_{OFFICE}_Delta.pkg",
        f"{TEAMS}/MicrosoftTeams_26183_BinaryDelta.pkg",
        f"{BASE}/Microsoft_Word_{OFFICE}_Installer.dmg",
        f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg.zip",
        f"{BASE}/",
        f"{BASE}/.pkg",
        f"{BASE}/..%2F..%2Fescape.pkg",
    ],
    ids=[
        "to-marker",
        "delta",
        "binary-delta",
        "dmg",
        "zip",
        "no-file-name",
        "hidden-name",
        "encoded-slash",
    ],
)
def test_parse_manifest_only_full_candidate_unusable_raises_feed_error(
    url: str,
) -> None:
    with pytest.raises(FeedError, match=r"^word-source: ") as caught:
        parse_manifest(plist([full_dict(OFFICE, url)]), "word-source")

    assert "\n" not in str(caught.value)


def test_parse_manifest_newest_build_with_a_delta_as_full_package_raises_in_any_order() -> (
    None
):
    good = full_dict(OFFICE, f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg")
    bad = delta_dict(
        OFFICE, "16.111.26072014", f"{BASE}/Word_16.111_to_{OFFICE}_Delta.pkg"
    )

    for order in ([good, bad], [bad, good]):
        with pytest.raises(FeedError, match="points at a delta"):
            parse_manifest(plist(order), "word")


def test_parse_manifest_delta_of_an_older_build_does_not_matter() -> None:
    url = f"{BASE}/Microsoft_Word_{OFFICE}_Updater.pkg"
    document = [
        full_dict("16.111.26072014", f"{BASE}/Word_16.110_to_16.111_Delta.pkg"),
        full_dict(OFFICE, url),
    ]

    assert parse_manifest(plist(document), "word").url == url


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([delta_dict(OFFICE, "16.111.26072014", "")], r"not a plain \.pkg"),
        (
            [
                {
                    "Update Version": OFFICE,
                    "Baseline Version": "16.1",
                    "Location": f"{BASE}/x.pkg",
                }
            ],
            "no full package",
        ),
        ([{"Location": f"{BASE}/x.pkg"}], "no full package"),
        ([], "no full package"),
    ],
    ids=["empty-full-updater", "delta-dict-without-full", "no-update-version", "empty"],
)
def test_parse_manifest_without_usable_full_package_raises_feed_error(
    document: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(FeedError, match=message):
        parse_manifest(plist(document), "word")


@pytest.mark.parametrize(
    "document",
    ["a string", [full_dict(OFFICE, f"{BASE}/a.pkg"), "stray"], 42],
    ids=["string-root", "array-with-string", "integer-root"],
)
def test_parse_manifest_wrong_root_raises_feed_error(document: object) -> None:
    with pytest.raises(FeedError, match="expected an array of dicts"):
        parse_manifest(plist(document), "word")


@pytest.mark.parametrize(
    "version",
    ["16.112.x", "16..1", "", "v16.1", "16.1-beta", "\u0661\u0666.\u0661"],
    ids=["letter", "empty-part", "empty", "prefix", "suffix", "arabic-indic-digits"],
)
def test_parse_manifest_update_version_not_a_build_raises_feed_error(
    version: str,
) -> None:
    document = [full_dict(version, f"{BASE}/Microsoft_Word_Updater.pkg")]

    with pytest.raises(FeedError, match=r"^word: .*not a build number"):
        parse_manifest(plist(document), "word")


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [("16.9", "16.10"), ("16.10", "16.10.0"), ("2", "10"), ("0.9.9", "1")],
    ids=["9-before-10", "shorter-first", "bare", "major-wins"],
)
def test_version_key_orders_builds_numerically(smaller: str, larger: str) -> None:
    assert version_key(smaller) < version_key(larger)


@pytest.mark.parametrize(
    "version",
    ["²", "16.²", "1e3", "-1", "16.1 .2"],
    ids=["superscript", "superscript-part", "exponent", "negative", "inner-space"],
)
def test_version_key_non_build_raises_value_error(version: str) -> None:
    with pytest.raises(ValueError, match="not a build number"):
        version_key(version)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (f"{BASE}/wdav-upgrade.pkg", "wdav-upgrade.pkg"),
        (f"{BASE}/With%20Space.pkg?sig=1", "With Space.pkg"),
        (f"{TEAMS}/MicrosoftTeams.pkg", "MicrosoftTeams.pkg"),
    ],
    ids=["plain", "encoded-space-and-query", "teams"],
)
def test_package_file_name_gives_last_segment(url: str, name: str) -> None:
    assert package_file_name(url) == name


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/a.dmg",
        f"{BASE}/",
        f"{BASE}/a%2Fb.pkg",
        f"{BASE}/a%5Cb.pkg",
        f"{BASE}/.hidden.pkg",
    ],
    ids=["not-pkg", "no-name", "encoded-slash", "encoded-backslash", "hidden"],
)
def test_package_file_name_unusable_name_raises_feed_error(url: str) -> None:
    with pytest.raises(FeedError, match=r"not a plain \.pkg file name"):
        package_file_name(url)


HOSTILE = {
    "entity-declaration": b"""<?xml version="1.0"?>
<!DOCTYPE plist [<!ENTITY word "EXPANDED">]>
<plist version="1.0"><dict><key>Update Version</key><string>&word;</string></dict></plist>""",
    "external-entity": b"""<?xml version="1.0"?>
<!DOCTYPE plist [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<plist version="1.0"><dict><key>Update Version</key><string>&xxe;</string></dict></plist>""",
    "billion-laughs": b"""<?xml version="1.0"?>
<!DOCTYPE plist [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<plist version="1.0"><dict><key>Update Version</key><string>&lol9;</string></dict></plist>""",
    "malformed": b"""<?xml version="1.0"?>
<plist version="1.0"><dict><key>Update Version</key><string>16.1</dict></plist>""",
    "truncated": fixture("0409MSWD2019.xml")[:500],
    "empty": b"",
    "binary-plist": plistlib.dumps(
        [{"Update Version": OFFICE}], fmt=plistlib.FMT_BINARY
    ),
    "garbage": bytes(range(256)),
    "json": b'{"Update Version": "16.112.26081720"}',
    "unknown-encoding": b'<?xml version="1.0" encoding="x-bogus"?><plist><dict/></plist>',
    "bad-date": b"<plist><dict><key>Date</key><date>yesterday</date></dict></plist>",
    "bad-integer": b"<plist><dict><key>LCID</key><integer>1O33</integer></dict></plist>",
    "key-without-value": b"<plist><dict><key>Update Version</key></dict></plist>",
}


@pytest.mark.parametrize("parse", [parse_chk, parse_manifest], ids=["chk", "manifest"])
@pytest.mark.parametrize("data", HOSTILE.values(), ids=list(HOSTILE))
def test_parse_hostile_or_broken_input_raises_one_line_feed_error(
    parse: Any, data: bytes
) -> None:
    with pytest.raises(FeedError) as caught:
        parse(data, HOSTILE_SOURCE)

    message = str(caught.value)
    assert message.startswith(f"{HOSTILE_SOURCE}: ")
    assert "\n" not in message
    assert "EXPANDED" not in message
    assert "root:" not in message
    assert "lollol" not in message


@pytest.mark.parametrize(
    "name",
    ["entity-declaration", "external-entity", "billion-laughs"],
    ids=["entity-declaration", "external-entity", "billion-laughs"],
)
def test_load_plist_entities_are_refused_before_the_plist_parser_runs(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> object:
        raise AssertionError("plistlib must not see a document with entities")

    monkeypatch.setattr(plistlib, "loads", never)

    with pytest.raises(FeedError, match="refused, the XML declares an entity"):
        load_plist(HOSTILE[name], HOSTILE_SOURCE)


def test_load_plist_external_parameter_entity_is_never_fetched(cdn: CDN) -> None:
    cdn.add("/evil.dtd", b'<!ENTITY leak "LEAKED">')
    data = f"""<?xml version="1.0"?>
<!DOCTYPE plist [<!ENTITY % remote SYSTEM "{cdn.url("/evil.dtd")}"> %remote;]>
<plist version="1.0"><dict><key>Update Version</key><string>&leak;</string></dict></plist>
""".encode()

    with pytest.raises(FeedError, match="refused"):
        parse_chk(data, HOSTILE_SOURCE)

    assert cdn.state.requests == []


def test_load_plist_external_dtd_reference_is_not_fetched(cdn: CDN) -> None:
    cdn.add("/plist.dtd", b'<!ENTITY leak "LEAKED">')
    data = f"""<?xml version="1.0"?>
<!DOCTYPE plist SYSTEM "{cdn.url("/plist.dtd")}">
<plist version="1.0"><dict><key>Update Version</key><string>16.1</string></dict></plist>
""".encode()

    assert parse_chk(data, HOSTILE_SOURCE) == "16.1"
    assert cdn.state.requests == []


def test_load_plist_oversized_input_raises_without_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: object, **kwargs: object) -> object:
        raise AssertionError("an oversized document must not be parsed")

    monkeypatch.setattr(defusedxml.ElementTree, "fromstring", never)
    data = fixture("0409MSWD2019.xml").ljust(MAX_FEED_BYTES + 1, b" ")

    with pytest.raises(
        FeedError, match=f"^{re.escape(HOSTILE_SOURCE)}: larger than {MAX_FEED_BYTES}"
    ):
        load_plist(data, HOSTILE_SOURCE)


def test_load_plist_input_at_the_limit_is_parsed() -> None:
    data = fixture("0409MSau04.xml").ljust(MAX_FEED_BYTES, b" ")

    assert parse_manifest(data, "mau").version == "4.85.26080216"


def test_load_plist_apple_doctype_is_accepted() -> None:
    assert isinstance(load_plist(fixture("0409MSau04.xml"), "mau"), list)


@pytest.fixture
def client(feeds: Feeds) -> Iterator[FeedClient]:
    """A feed client reading the fixture feeds from the local CDN."""
    with PolicySession(("127.0.0.1",), 5.0) as session:
        yield FeedClient(session, feeds.cdn.url("/mro1cdnstorage/"), retry_seconds=3.0)


@pytest.mark.parametrize(
    ("channel", "guid"),
    [
        ("current", CURRENT),
        ("Preview", "1ac37578-5a24-40fb-892e-b89d85b6dfaa"),
        ("BETA", "4B2D7701-0A4F-49C8-B4CB-0C2D4043F51F"),
        (
            "0f0e0d0c-0b0a-0908-0706-050403020100",
            "0f0e0d0c-0b0a-0908-0706-050403020100",
        ),
    ],
    ids=["current", "preview-mixed-case", "beta-upper-case", "guid"],
)
def test_feed_client_manifest_url_follows_the_mau_layout(
    channel: str, guid: str
) -> None:
    with PolicySession(("127.0.0.1",), 5.0) as session:
        client = FeedClient(session, "https://cdn.example/base/", 3.0)

        assert client.manifest_url(WORD, channel) == (
            f"https://cdn.example/base/{guid}/MacAutoupdate/0409MSWD2019.xml"
        )


def test_feed_client_fetch_chk_existing_gives_version(client: FeedClient) -> None:
    assert client.fetch_chk(WORD, "current") == (True, OFFICE)


def test_feed_client_fetch_chk_missing_file_means_no_chk(
    client: FeedClient, feeds: Feeds
) -> None:
    assert client.fetch_chk(REMOTE_HELP, "current") == (False, None)
    assert feeds.cdn.state.requests == [feeds.feed_path("MSRH01", "-chk.xml")]


def test_feed_client_fetch_chk_400_means_no_chk(
    client: FeedClient, feeds: Feeds
) -> None:
    feeds.cdn.fault(feeds.feed_path("MSWD2019", "-chk.xml"), status(400))

    assert client.fetch_chk(WORD, "current") == (False, None)


def test_feed_client_fetch_chk_sentinel_gives_no_version(
    client: FeedClient, feeds: Feeds
) -> None:
    feeds.cdn.add(
        feeds.feed_path("MSWD2019", "-chk.xml"), plist({"Update Version": "99999"})
    )

    assert client.fetch_chk(WORD, "current") == (True, None)


@pytest.mark.parametrize("code", [401, 403, 410], ids=["401", "403", "410"])
def test_feed_client_fetch_chk_other_client_error_raises_feed_error(
    client: FeedClient, feeds: Feeds, code: int
) -> None:
    feeds.cdn.fault(feeds.feed_path("MSWD2019", "-chk.xml"), status(code))

    with pytest.raises(FeedError, match=f"answered HTTP {code}"):
        client.fetch_chk(WORD, "current")


def test_feed_client_fetch_chk_server_error_every_time_raises_feed_error(
    client: FeedClient, feeds: Feeds
) -> None:
    feeds.cdn.fault(feeds.feed_path("MSWD2019", "-chk.xml"), *[status(503)] * 3)

    with pytest.raises(FeedError, match=r"cannot fetch .*HTTP 503"):
        client.fetch_chk(WORD, "current")


def test_feed_client_fetch_chk_redirect_to_unlisted_host_raises_policy_error(
    client: FeedClient, feeds: Feeds
) -> None:
    path = feeds.feed_path("MSWD2019", "-chk.xml")
    feeds.cdn.fault(path, redirect("https://evil.example/0409MSWD2019-chk.xml"))

    with pytest.raises(URLPolicyError, match=r"evil\.example"):
        client.fetch_chk(WORD, "current")


def test_feed_client_fetch_latest_gives_full_package_on_the_local_cdn(
    client: FeedClient, feeds: Feeds
) -> None:
    package = client.fetch_latest(WORD, "current")

    assert package.version == OFFICE
    assert package.url == feeds.cdn.url(feeds.packages["word"].path)


def test_feed_client_fetch_latest_package_on_unlisted_host_raises_policy_error(
    client: FeedClient, feeds: Feeds
) -> None:
    url = "https://evil.example/Microsoft_Word_16.113.1_Updater.pkg"
    feeds.cdn.add(feeds.feed_path("MSWD2019"), plist([full_dict("16.113.1", url)]))

    with pytest.raises(URLPolicyError, match=r"evil\.example"):
        client.fetch_latest(WORD, "current")


def test_feed_client_fetch_latest_missing_manifest_raises_feed_error(
    client: FeedClient,
) -> None:
    with pytest.raises(FeedError, match="answered HTTP 404"):
        client.fetch_latest(App("ghost", "GHST01", "Ghost"), "current")


def test_feed_client_fetch_latest_hostile_manifest_raises_feed_error_naming_url(
    client: FeedClient, feeds: Feeds
) -> None:
    path = feeds.feed_path("MSWD2019")
    feeds.cdn.add(path, HOSTILE["external-entity"])

    with pytest.raises(FeedError, match="refused") as caught:
        client.fetch_latest(WORD, "current")

    assert str(caught.value).startswith(feeds.cdn.url(path))


def test_feed_client_unreachable_base_raises_feed_error() -> None:
    with PolicySession(("127.0.0.1",), 1.0) as session:
        client = FeedClient(session, "http://127.0.0.1:9/base", retry_seconds=1.0)

        with pytest.raises(
            FeedError, match=re.escape("cannot fetch http://127.0.0.1:9/base/")
        ):
            client.fetch_chk(WORD, "current")
