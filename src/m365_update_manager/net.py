"""HTTP sessions held to the URL policy, with timeouts and bounded retries."""

import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import stamina
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from m365_update_manager.errors import URLPolicyError
from m365_update_manager.logs import redact

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost"}
USER_AGENT = "m365-update-manager"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientHTTPError(Exception):
    """A failure worth retrying: connection trouble, 5xx or 429."""


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """Return ``url`` when the policy admits it, else raise ``URLPolicyError``.

    Only https to a host in ``allowed_hosts``; plain http only to a loopback host
    that is in the list, so that tests and local mirrors work.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host != _connect_host(url) or parts.username is not None:
        raise URLPolicyError(
            f"refused {url}: its host is ambiguous (user info, a backslash or an "
            "unusual character); give a plain URL"
        )
    if host not in allowed_hosts:
        raise URLPolicyError(
            f"refused {url}: host {host or '(none)'} is not in M365_ALLOWED_HOSTS"
        )
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _is_loopback(host):
        return url
    raise URLPolicyError(f"refused {url}: only https is allowed outside loopback")


def _connect_host(url: str) -> str | None:
    """Return the host urllib3, and so requests, would connect to for ``url``.

    urllib3 reads ``https://evil\\@allowed/`` as host ``evil`` where ``urlsplit``
    reads ``allowed``: a URL is admitted only when both parsers agree.
    """
    try:
        host = parse_url(url).host
    except LocationParseError:
        return None
    return (host or "").strip("[]").lower()


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PolicySession(requests.Session):
    """A ``requests`` session that refuses URLs and redirects outside the policy."""

    def __init__(self, allowed_hosts: tuple[str, ...], timeout: float) -> None:
        super().__init__()
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.max_redirects = 5
        self.headers["User-Agent"] = USER_AGENT
        self.trust_env = False

    def request(  # type: ignore[override]  # narrower than Session.request on purpose
        self, method: str, url: str, **kwargs: Any
    ) -> requests.Response:
        """Send one request (``send`` checks its URL); a timeout is always set."""
        kwargs.setdefault("timeout", (min(self.timeout, 10.0), self.timeout))
        return super().request(method, url, **kwargs)

    def send(
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        """Check the URL actually sent, redirects included, against the policy."""
        check_url(request.url or "", self.allowed_hosts)
        return super().send(request, **kwargs)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """Check a redirect's target against the policy before it is followed."""
        target = super().get_redirect_target(resp)
        if target is not None:
            absolute = requests.compat.urljoin(resp.url, target)
            try:
                check_url(absolute, self.allowed_hosts)
            except URLPolicyError:
                resp.close()  # nobody else holds it: give its connection back
                raise
        return target


def raise_for_transient(response: requests.Response) -> None:
    """Raise ``TransientHTTPError`` for a status that a retry may cure."""
    if response.status_code in TRANSIENT_STATUS:
        response.close()
        raise TransientHTTPError(f"HTTP {response.status_code} from {response.url}")


RETRYABLE = (
    TransientHTTPError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class Document:
    """A small response read whole: status, final URL and body."""

    status: int
    url: str
    body: bytes


def retry_attempts(budget_seconds: float) -> Iterator[stamina.Attempt]:
    """Return stamina attempts for transient errors, capped at ``budget_seconds`` in all."""
    return iter(
        stamina.retry_context(
            on=RETRYABLE,
            attempts=None,
            timeout=budget_seconds,
            wait_initial=0.5,
            wait_max=8.0,
        )
    )


def log_retry(url: str, number: int) -> None:
    """Log a retry at WARNING, naming the URL (the first attempt is not a retry)."""
    if number > 1:
        log.warning("retrying %s (attempt %d)", url, number)


def get_document(
    session: PolicySession, url: str, budget_seconds: float, limit: int
) -> Document:
    """GET a small document with retries; the body is capped at ``limit`` bytes."""
    for attempt in retry_attempts(budget_seconds):
        log_retry(url, attempt.num)
        with attempt, session.get(url, stream=True) as response:
            raise_for_transient(response)
            body = _read_capped(response, limit)
            return Document(response.status_code, response.url, body)
    raise AssertionError("unreachable: stamina raises once the budget is spent")


def _read_capped(response: requests.Response, limit: int) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > limit:
            response.close()
            raise URLPolicyError(f"refused {response.url}: larger than {limit} bytes")
    return bytes(body)


def short_reason(exc: BaseException) -> str:
    """Return a short, one-line reason for an exception, secrets masked, for messages."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    text = redact(str(exc)).strip()  # SDK errors can quote a URL with its SAS
    return text.splitlines()[0][:300] if text else type(exc).__name__


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (requests.exceptions.ConnectTimeout, "connecting timed out"),
    (requests.exceptions.ReadTimeout, "the server stopped answering (read timed out)"),
    (requests.exceptions.SSLError, "the TLS handshake failed"),
    (requests.exceptions.ChunkedEncodingError, "the connection broke mid-transfer"),
    (requests.exceptions.TooManyRedirects, "too many redirects"),
    (
        requests.exceptions.ConnectionError,
        "cannot connect (host unreachable or refused)",
    ),
)
