"""Read and commit ``manifest.json`` on a GitHub branch through the contents API.

Also the one place that talks to PyGithub: its client set-up, the retries of
network errors and 5xx answers, and the translation of its exceptions into
``GitHubError`` messages that never carry the token.
"""

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import requests
import stamina
from github import Auth, Github, GithubException
from github.ContentFile import ContentFile
from github.Repository import Repository

from m365_update_manager import __version__
from m365_update_manager.errors import GitHubError, ManifestError
from m365_update_manager.logs import redact, register_secrets
from m365_update_manager.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_SECONDS = 30
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def is_transient(exc: Exception) -> bool:
    """Tell whether a retry may help: network errors and GitHub's 5xx answers."""
    if isinstance(exc, GithubException):
        return exc.status >= 500
    return isinstance(exc, _NETWORK_ERRORS)


# A run makes a handful of calls, so a short capped backoff is enough; PyGithub's
# own retries and throttling are off (see ``connect``) so that only this one acts.
retry_transient = stamina.RetryingCaller(attempts=3, timeout=60.0, wait_max=5.0).on(
    is_transient
)


@dataclass(frozen=True)
class GitHubAccess:
    """Where and as whom to reach GitHub (or GitHub Enterprise Server)."""

    token: str
    repository: str
    api_url: str


def github_access(settings: Settings) -> GitHubAccess | None:
    """Return token, repository and API URL from the settings, or None without them."""
    if settings.github_token is None or settings.github_repository is None:
        return None
    return GitHubAccess(
        settings.github_token.get_secret_value(),
        settings.github_repository,
        settings.github_api_url,
    )


def connect(token: str, api_url: str) -> Github:
    """Return a lazy PyGithub client for github.com or a GitHub Enterprise Server."""
    register_secrets([token])
    return Github(
        auth=Auth.Token(token),
        base_url=api_url.rstrip("/"),
        timeout=TIMEOUT_SECONDS,
        user_agent=f"m365-update-manager/{__version__}",
        per_page=100,
        retry=None,
        seconds_between_requests=0,
        seconds_between_writes=0,
        lazy=True,
    )


def call_github(action: str, call: Callable[[], T], *, permission: str) -> T:
    """Run ``call`` with retries; raise ``GitHubError`` naming ``action`` on failure."""
    try:
        return retry_transient(call)
    except (GithubException, requests.RequestException) as exc:
        raise github_error(exc, action, permission=permission) from exc


def github_error(exc: Exception, action: str, *, permission: str) -> GitHubError:
    """Translate a PyGithub or requests exception into a one-line ``GitHubError``."""
    if isinstance(exc, GithubException):
        return GitHubError(f"{action}: {_refusal(exc, permission)}")
    reason = f"could not reach GitHub ({type(exc).__name__})"
    return GitHubError(f"{action}: {reason}; check the network and GITHUB_API_URL")


def _refusal(exc: GithubException, permission: str) -> str:
    said = f"{exc.status} {github_message(exc)}"
    if _is_rate_limit(exc):
        return f"GitHub rate limit exceeded ({said}); {_rate_reset(exc)}"

    hints = {
        401: "check that GITHUB_TOKEN is set, valid and not expired",
        403: f"give the token `{permission}` permission on the repository",
        404: "check GITHUB_REPOSITORY, the branch, and that the token can see them",
    }
    if exc.status >= 500:
        later = "re-run later (https://www.githubstatus.com)"
        return f"GitHub failed ({said}); GitHub is having trouble, {later}"
    hint = hints.get(exc.status)
    return f"GitHub refused ({said}); {hint}" if hint else f"GitHub refused ({said})"


def github_message(exc: GithubException) -> str:
    """Return GitHub's own error message on one line, redacted and short."""
    data = exc.data
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str) or not message.strip():
        return "no message"
    one_line = " ".join(message.split())
    return redact(one_line)[:200]


def _is_rate_limit(exc: GithubException) -> bool:
    if exc.status not in (403, 429):
        return False
    headers = exc.headers or {}
    exhausted = headers.get("x-ratelimit-remaining") == "0"
    return exhausted or "retry-after" in headers or "rate limit" in github_message(exc)


def _rate_reset(exc: GithubException) -> str:
    headers = exc.headers or {}
    reset = headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        when = datetime.fromtimestamp(int(reset), tz=UTC)
        return f"it resets at {when:%Y-%m-%d %H:%M:%S} UTC; re-run after that"
    retry_after = headers.get("retry-after", "")
    if retry_after.isdigit():
        return f"GitHub asks to wait {retry_after} seconds; re-run after that"
    return "wait a few minutes and re-run"


@dataclass(frozen=True)
class _Snapshot:
    text: str
    sha: str


class _StaleFileError(Exception):
    """GitHub refused a write because the file changed since it was read."""


class GitHubState:
    """manifest.json on a branch of a GitHub (or GitHub Enterprise Server) repository.

    ``commit`` is optimistic: it writes with the blob SHA it read and, when GitHub
    says the file changed in between, reads again and re-applies ``update``.
    """

    def __init__(
        self,
        *,
        token: str,
        repository: str,
        branch: str | None,
        api_url: str,
        attempts: int = 4,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._repository = repository
        self._branch = branch
        self._attempts = attempts
        self._repo: Repository = connect(token, api_url).get_repo(repository)
        self._repository_checked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "GitHubState | None":
        """Build from GITHUB_* settings; None when the token or repository is unset."""
        access = github_access(settings)
        if access is None:
            return None
        return cls(
            token=access.token,
            repository=access.repository,
            branch=settings.github_branch,
            api_url=access.api_url,
        )

    def fetch(self, path: str) -> str | None:
        """Return the file's text at the branch head, or None when it does not exist."""
        snapshot = self._read(path, self._branch_name())
        return None if snapshot is None else snapshot.text

    def commit(
        self, path: str, update: Callable[[str | None], str | None], message: str
    ) -> bool:
        """Commit ``update(current text)``; return False when nothing changed.

        ``update`` may be called more than once, each time with the newest text on
        the branch: it must re-apply its changes to what it is given. Raises
        ``GitHubError`` when the file kept changing for ``attempts`` tries.
        """
        branch = self._branch_name()
        where = f"{path} on {self._repository}@{branch}"
        said = ""

        for attempt in range(1, self._attempts + 1):
            current = self._read(path, branch)
            text = None if current is None else current.text
            changed = update(text)
            if changed is None or changed == text:
                logger.info("%s: nothing to commit", where)
                return False
            try:
                self._write(path, branch, changed, current, message)
            except _StaleFileError as stale:
                said = str(stale)
                logger.warning(
                    "%s changed while committing (attempt %d of %d, GitHub said: %s)",
                    where,
                    attempt,
                    self._attempts,
                    said,
                )
                continue
            return True

        raise GitHubError(
            f"commit {where}: the file changed on GitHub during each of"
            f" {self._attempts} attempts (last: {said}); another run is probably"
            " writing it, re-run this one after it finishes"
        )

    def _branch_name(self) -> str:
        if self._branch is None:
            action = f"read the default branch of {self._repository}"
            self._branch = self._call(action, lambda: self._repo.default_branch)
            self._repository_checked = True
        return self._branch

    def _read(self, path: str, branch: str) -> _Snapshot | None:
        action = f"read {path} from {self._repository}@{branch}"
        try:
            found = retry_transient(lambda: self._repo.get_contents(path, ref=branch))
        except GithubException as exc:
            if exc.status != 404:
                raise github_error(exc, action, permission="contents: read") from exc
            self._check_missing(exc, action, branch)
            return None
        except requests.RequestException as exc:
            raise github_error(exc, action, permission="contents: read") from exc

        if isinstance(found, list):
            raise GitHubError(f"{action}: {path} is a directory, not a file")
        return _Snapshot(self._decode(found, action), found.sha)

    def _check_missing(self, exc: GithubException, action: str, branch: str) -> None:
        # GitHub answers 404 alike for a missing file, branch and repository; only
        # a missing file means "no manifest yet".
        if "no commit found" in github_message(exc).lower():
            hint = "check GITHUB_REF_NAME or create the branch"
            raise GitHubError(f"{action}: branch {branch} does not exist; {hint}")
        if not self._repository_checked:
            self._call(f"open {self._repository}", lambda: self._repo.default_branch)
            self._repository_checked = True

    def _decode(self, found: ContentFile, action: str) -> str:
        # Above 1 MB the contents API leaves ``content`` empty (encoding "none");
        # the blob API still serves the file.
        if found.encoding == "base64":
            raw = found.decoded_content
        else:
            blob = self._call(action, lambda: self._repo.get_git_blob(found.sha))
            raw = base64.b64decode(blob.content)

        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            hint = "restore a good version from the git history"
            raise ManifestError(
                f"{action}: the file is not UTF-8 text; {hint}"
            ) from exc

    def _write(
        self,
        path: str,
        branch: str,
        text: str,
        current: _Snapshot | None,
        message: str,
    ) -> None:
        action = f"commit {path} to {self._repository}@{branch}"
        try:
            commit_sha = retry_transient(
                lambda: self._put(path, branch, text, current, message)
            )
        except GithubException as exc:
            if _is_stale(exc):
                raise _StaleFileError(f"{exc.status} {github_message(exc)}") from exc
            raise github_error(exc, action, permission="contents: write") from exc
        except requests.RequestException as exc:
            raise github_error(exc, action, permission="contents: write") from exc

        logger.info(
            "committed %s to %s@%s (%s)", path, self._repository, branch, commit_sha
        )

    def _put(
        self,
        path: str,
        branch: str,
        text: str,
        current: _Snapshot | None,
        message: str,
    ) -> str:
        if current is None:
            created = self._repo.create_file(path, message, text, branch=branch)
            return created["commit"].sha[:12]
        updated = self._repo.update_file(
            path, message, text, current.sha, branch=branch
        )
        return updated["commit"].sha[:12]

    def _call(self, action: str, call: Callable[[], T]) -> T:
        return call_github(action, call, permission="contents: write")


def _is_stale(exc: GithubException) -> bool:
    # 409 "is at X but expected Y" when the blob SHA is outdated; 422 "sha wasn't
    # supplied" when someone created the file after we found none.
    if exc.status == 409:
        return True
    return exc.status == 422 and "sha" in github_message(exc).lower()
