"""Tests of the URL policy, the policy-bound session and small-document fetches."""

import io
from collections.abc import Iterator

import pytest
import requests
import responses

from m365_update_manager.errors import FeedError, URLPolicyError
from m365_update_manager.net import (
    Document,
    PolicySession,
    TransientHTTPError,
    check_url,
    get_document,
    raise_for_transient,
    short_reason,
)
from tests.support.cdn import CDN, redirect, status

CDN_HOST = "res.public.onecdn.static.microsoft"
TEAMS_HOST = "teamsinstaller.public.onecdn.static.microsoft"
HOSTS = (CDN_HOST, TEAMS_HOST, "127.0.0.1", "::1", "localhost")
FEED = f"https://{CDN_HOST}/mro1cdnstorage/feed.xml"


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """Answer HTTP calls from a table; an unlisted URL fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as requests_mock:
        yield requests_mock


@pytest.fixture
def session() -> Iterator[PolicySession]:
    """A session held to HOSTS with a short timeout."""
    with PolicySession(HOSTS, 5.0) as policy_session:
        yield policy_session


@pytest.mark.parametrize(
    "url",
    [
        FEED,
        f"https://{TEAMS_HOST}/production-osx/26213.1006.5011.1671/MicrosoftTeams.pkg",
        f"https://{CDN_HOST.upper()}/Upper.pkg",
        f"https://{CDN_HOST}:443/with%20space.pkg?query=1#fragment",
        "http://127.0.0.1:8000/feed.xml",
        "http://[::1]:8000/feed.xml",
        "http://localhost/feed.xml",
        "https://127.0.0.1/feed.xml",
    ],
    ids=[
        "https-cdn",
        "https-teams-host",
        "upper-case-host",
        "port-query-fragment",
        "http-127.0.0.1",
        "http-ipv6-loopback",
        "http-localhost",
        "https-loopback",
    ],
)
def test_check_url_admitted_url_is_returned_unchanged(url: str) -> None:
    assert check_url(url, HOSTS) == url


@pytest.mark.parametrize(
    ("url", "hosts", "reason"),
    [
        ("https://evil.example/x.pkg", HOSTS, "not in M365_ALLOWED_HOSTS"),
        (f"https://{CDN_HOST}.evil.example/x.pkg", HOSTS, "not in M365_ALLOWED_HOSTS"),
        (f"https://evil.example/{CDN_HOST}/x.pkg", HOSTS, "not in M365_ALLOWED_HOSTS"),
        (f"https://x{CDN_HOST}/x.pkg", HOSTS, "not in M365_ALLOWED_HOSTS"),
        (f"http://{CDN_HOST}/x.pkg", HOSTS, "only https"),
        ("http://127.0.0.1/x.pkg", (CDN_HOST,), "not in M365_ALLOWED_HOSTS"),
        ("http://localhost/x.pkg", ("127.0.0.1",), "not in M365_ALLOWED_HOSTS"),
        ("http://[::1]/x.pkg", ("127.0.0.1", "localhost"), "not in M365_ALLOWED_HOSTS"),
        (f"ftp://{CDN_HOST}/x.pkg", HOSTS, "only https"),
        ("file:///etc/passwd", HOSTS, "(none)"),
        ("/relative/x.pkg", HOSTS, "(none)"),
        (f"https://evil.example\\@{CDN_HOST}/x.pkg", HOSTS, "ambiguous"),
        (f"https://user:pw@{CDN_HOST}/x.pkg", HOSTS, "ambiguous"),
        (f"https://{CDN_HOST}@evil.example/x.pkg", HOSTS, "ambiguous"),
    ],
    ids=[
        "other-host",
        "allowed-host-as-prefix",
        "allowed-host-in-path",
        "allowed-host-as-suffix",
        "http-to-non-loopback",
        "loopback-not-listed",
        "localhost-not-listed",
        "ipv6-loopback-not-listed",
        "ftp-scheme",
        "file-scheme",
        "no-host",
        "backslash-before-at",
        "user-info",
        "allowed-host-as-user-name",
    ],
)
def test_check_url_disallowed_url_raises_policy_error_naming_it(
    url: str, hosts: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(URLPolicyError) as caught:
        check_url(url, hosts)

    assert reason in str(caught.value)
    assert url in str(caught.value)


def test_url_policy_error_is_a_feed_error() -> None:
    assert issubclass(URLPolicyError, FeedError)


def test_session_disallowed_url_raises_before_any_request(
    session: PolicySession, mock: responses.RequestsMock
) -> None:
    mock.get("https://evil.example/x.pkg", body=b"payload")

    with pytest.raises(URLPolicyError):
        session.get("https://evil.example/x.pkg")

    assert len(mock.calls) == 0


def test_session_backslash_url_never_reaches_the_other_host(
    session: PolicySession, mock: responses.RequestsMock
) -> None:
    # requests sends this to evil.example although urlsplit reads the CDN host.
    mock.get("https://evil.example/", body=b"payload")
    mock.get(f"https://evil.example/%5C@{CDN_HOST}/x.pkg", body=b"payload")

    with pytest.raises(URLPolicyError):
        session.get(f"https://evil.example\\@{CDN_HOST}/x.pkg")

    assert len(mock.calls) == 0


def test_session_request_without_timeout_gets_the_default(
    session: PolicySession, mock: responses.RequestsMock
) -> None:
    mock.get(FEED, body=b"ok")

    session.get(FEED)

    assert vars(mock.calls[0].request)["req_kwargs"]["timeout"] == (5.0, 5.0)


def test_session_long_timeout_caps_the_connect_timeout_at_ten_seconds(
    mock: responses.RequestsMock,
) -> None:
    mock.get(FEED, body=b"ok")

    with PolicySession(HOSTS, 60.0) as session:
        session.get(FEED)

    assert vars(mock.calls[0].request)["req_kwargs"]["timeout"] == (10.0, 60.0)


def test_session_ignores_proxy_settings_of_the_environment() -> None:
    with PolicySession(HOSTS, 5.0) as session:
        assert session.trust_env is False


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example/x.pkg",
        f"http://{CDN_HOST}/x.pkg",
        f"https://evil.example\\@{CDN_HOST}/x.pkg",
        "//evil.example/x.pkg",
    ],
    ids=["other-host", "downgrade-to-http", "backslash-trick", "scheme-relative"],
)
def test_session_redirect_outside_policy_raises_without_following(
    session: PolicySession, mock: responses.RequestsMock, location: str
) -> None:
    mock.get(FEED, status=302, headers={"Location": location})
    mock.get("https://evil.example/x.pkg", body=b"payload")
    mock.get(f"http://{CDN_HOST}/x.pkg", body=b"payload")

    with pytest.raises(URLPolicyError):
        session.get(FEED)

    assert [call.request.url for call in mock.calls] == [FEED]


def test_session_redirect_within_policy_is_followed(
    session: PolicySession, mock: responses.RequestsMock
) -> None:
    target = f"https://{TEAMS_HOST}/MicrosoftTeams.pkg"
    mock.get(FEED, status=301, headers={"Location": target})
    mock.get(target, body=b"package")

    response = session.get(FEED)

    assert (response.status_code, response.url, response.content) == (
        200,
        target,
        b"package",
    )


def test_session_local_cdn_redirect_to_unlisted_host_is_refused(cdn: CDN) -> None:
    cdn.add("/feed.xml", b"<plist/>")
    cdn.fault("/feed.xml", redirect("http://localhost:9/elsewhere.xml"))

    with (
        PolicySession(("127.0.0.1",), 5.0) as session,
        pytest.raises(URLPolicyError, match="localhost"),
    ):
        session.get(cdn.url("/feed.xml"))

    assert cdn.state.requests == ["/feed.xml"]


def test_session_local_cdn_redirect_to_listed_loopback_is_followed(cdn: CDN) -> None:
    cdn.add("/moved.xml", b"<plist/>")
    cdn.fault("/feed.xml", redirect(cdn.url("/moved.xml")))

    with PolicySession(("127.0.0.1",), 5.0) as session:
        response = session.get(cdn.url("/feed.xml"))

    assert (response.status_code, response.content) == (200, b"<plist/>")
    assert cdn.state.requests == ["/feed.xml", "/moved.xml"]


def test_get_document_ok_returns_status_url_and_body(cdn: CDN) -> None:
    cdn.add("/feed.xml", b"<plist/>")

    with PolicySession(("127.0.0.1",), 5.0) as session:
        document = get_document(session, cdn.url("/feed.xml"), 3.0, 1024)

    assert document == Document(200, cdn.url("/feed.xml"), b"<plist/>")


@pytest.mark.parametrize("code", [400, 403, 404], ids=["400", "403", "404"])
def test_get_document_client_error_is_returned_not_retried(cdn: CDN, code: int) -> None:
    cdn.fault("/feed.xml", status(code))

    with PolicySession(("127.0.0.1",), 5.0) as session:
        document = get_document(session, cdn.url("/feed.xml"), 3.0, 1024)

    assert document.status == code
    assert cdn.state.requests == ["/feed.xml"]


@pytest.mark.parametrize("code", [429, 500, 503], ids=["429", "500", "503"])
def test_get_document_transient_status_is_retried(cdn: CDN, code: int) -> None:
    cdn.add("/feed.xml", b"<plist/>")
    cdn.fault("/feed.xml", status(code))

    with PolicySession(("127.0.0.1",), 5.0) as session:
        document = get_document(session, cdn.url("/feed.xml"), 3.0, 1024)

    assert (document.status, document.body) == (200, b"<plist/>")
    assert cdn.state.requests == ["/feed.xml", "/feed.xml"]


def test_get_document_transient_status_every_time_raises_after_the_budget(
    cdn: CDN,
) -> None:
    cdn.fault("/feed.xml", status(503), status(503), status(503), status(503))

    with (
        PolicySession(("127.0.0.1",), 5.0) as session,
        pytest.raises(TransientHTTPError, match="503"),
    ):
        get_document(session, cdn.url("/feed.xml"), 3.0, 1024)

    assert cdn.state.requests == ["/feed.xml"] * 3  # conftest: 3 attempts in tests


def test_get_document_body_over_the_limit_raises(cdn: CDN) -> None:
    cdn.add("/feed.xml", b"x" * 2048)

    with (
        PolicySession(("127.0.0.1",), 5.0) as session,
        pytest.raises(URLPolicyError, match="larger than 1024 bytes"),
    ):
        get_document(session, cdn.url("/feed.xml"), 3.0, 1024)


def test_get_document_body_at_the_limit_is_returned(cdn: CDN) -> None:
    cdn.add("/feed.xml", b"x" * 1024)

    with PolicySession(("127.0.0.1",), 5.0) as session:
        document = get_document(session, cdn.url("/feed.xml"), 3.0, 1024)

    assert len(document.body) == 1024


@pytest.mark.parametrize(
    ("code", "transient"),
    [(200, False), (404, False), (408, True), (429, True), (502, True), (504, True)],
    ids=["200", "404", "408", "429", "502", "504"],
)
def test_raise_for_transient_status_raises_only_for_retryable_codes(
    code: int, transient: bool
) -> None:
    response = requests.Response()
    response.status_code = code
    response.url = FEED
    response.raw = io.BytesIO(b"")

    if transient:
        with pytest.raises(TransientHTTPError, match=str(code)):
            raise_for_transient(response)
    else:
        raise_for_transient(response)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("first line\nsecond line"), "first line"),
        (ValueError("  padded  "), "padded"),
        (KeyError(), "KeyError"),
    ],
    ids=["multi-line", "padded", "empty"],
)
def test_short_reason_exception_gives_one_line(
    exc: BaseException, expected: str
) -> None:
    assert short_reason(exc) == expected
