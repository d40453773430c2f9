"""Tell people what a run did: a Markdown report, and GitHub issues without duplicates.

Each kind of event gets one issue per run. A hidden marker in the issue body names
the apps and builds it reports, so that re-running the same work finds the open
issue instead of opening another. Failures get one open issue per command, and
later failures of that command add comments to it.
"""

import functools
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

import requests
from github import GithubException
from github.Issue import Issue
from github.Repository import Repository

from m365_update_manager.errors import GitHubError
from m365_update_manager.events import Event, EventKind
from m365_update_manager.settings import Settings
from m365_update_manager.state_sync import (
    call_github,
    connect,
    github_access,
    github_error,
    retry_transient,
)

logger = logging.getLogger(__name__)

PRODUCT_LABEL = "m365-update-manager"
_PERMISSION = "issues: write"
_TITLE_LIMIT = 200
_HEADINGS = {
    EventKind.STAGED: "Staged",
    EventKind.PROMOTED: "Promoted",
    EventKind.ROLLED_BACK: "Rolled back",
    EventKind.HELD: "Held back",
    EventKind.FAILED: "Failed",
}
_LABEL_COLOURS = {
    PRODUCT_LABEL: "5319e7",
    EventKind.STAGED.value: "fbca04",
    EventKind.PROMOTED.value: "0e8a16",
    EventKind.ROLLED_BACK.value: "d93f0b",
    EventKind.HELD.value: "c5def5",
    EventKind.FAILED.value: "b60205",
}
_NEXT_STEPS = {
    EventKind.STAGED: (
        "Each build is promoted once its lag has passed. To keep one back, run"
        ' `python promote.py --hold {app} --reason "..."`.'
    ),
    EventKind.PROMOTED: (
        "Macs that pull `live/{app}.pkg` now get the new build. If it causes"
        " trouble, run `python promote.py --rollback {app}`."
    ),
    EventKind.ROLLED_BACK: (
        "`live/{app}.pkg` serves the build in the *To* column again, and the one it"
        " replaced waits in `previous/`. Rolling back does not downgrade Macs that"
        " already installed a newer build: reinstall those by hand if they must go"
        " back."
    ),
    EventKind.HELD: (
        "Microsoft's feed no longer offers this build, so it is not promoted."
        " Check Microsoft's release notes for the reason; the next build in the"
        " feed is staged as usual."
    ),
    EventKind.FAILED: (
        "Check the run log for the whole error. Likely causes: the feed or CDN was"
        " unreachable (the next run tries again), a download host missing from"
        " `M365_ALLOWED_HOSTS`, expired storage credentials, or a package that did"
        " not verify. {retry}"
    ),
}


@dataclass(frozen=True)
class Notice:
    """One issue's worth of events of one kind: title, Markdown body and marker."""

    kind: EventKind
    title: str
    body: str
    marker: str


class Notifier(Protocol):
    """Something that tells people about the events of a run."""

    def publish(
        self, events: Sequence[Event], *, command: str, run_url: str | None
    ) -> None:
        """Report the events of one run of ``command``."""


def render_markdown(
    events: Sequence[Event], *, command: str, run_url: str | None
) -> str:
    """Return a short Markdown report: per kind a table and what to do next."""
    groups = _group(events)
    sections = [_section(kind, group, command) for kind, group in groups.items()]
    if not sections:
        sections.append(f"`{script_of(command)}`: nothing to report.")

    origin = f"From `{script_of(command)}`"
    sections.append(f"{origin}: [run log]({run_url})." if run_url else f"{origin}.")
    return "\n\n".join(sections) + "\n"


def plan_notices(
    events: Sequence[Event], *, command: str, run_url: str | None
) -> list[Notice]:
    """Group the events by kind: one notice per kind, in the order of ``EventKind``."""
    return [
        Notice(
            kind=kind,
            title=_title(kind, group, command),
            body=render_markdown(group, command=command, run_url=run_url),
            marker=_marker(kind, group, command),
        )
        for kind, group in _group(events).items()
    ]


def write_step_summary(path: Path | None, markdown: str) -> None:
    """Append the Markdown to ``$GITHUB_STEP_SUMMARY``; do nothing when it is unset."""
    if path is None:
        return

    text = markdown if markdown.endswith("\n") else markdown + "\n"
    try:
        with path.open("a", encoding="utf-8") as summary:
            summary.write(text)
    except OSError as exc:
        hint = "check GITHUB_STEP_SUMMARY"
        raise GitHubError(
            f"write the step summary {path}: {exc.strerror}; {hint}"
        ) from exc


class PrintNotifier:
    """Print what ``GitHubNotifier`` would post; used when no GitHub token is set."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def publish(
        self, events: Sequence[Event], *, command: str, run_url: str | None
    ) -> None:
        """Print one title and body per kind of event to stdout."""
        stream = self._stream or sys.stdout
        for notice in plan_notices(events, command=command, run_url=run_url):
            stream.write(f"{notice.title}\n\n{notice.body}\n")


class GitHubNotifier:
    """Open one GitHub issue per kind of event; comment on the open failure issue.

    Publishing the same events again opens nothing new: the open issue with the
    same marker is found and left alone. Raises ``GitHubError`` when GitHub fails.
    """

    def __init__(self, *, token: str, repository: str, api_url: str) -> None:
        self._repository = repository
        self._repo: Repository = connect(token, api_url).get_repo(repository)

    @classmethod
    def from_settings(cls, settings: Settings) -> "GitHubNotifier | None":
        """Build from GITHUB_* settings; None when the token or repository is unset."""
        access = github_access(settings)
        if access is None:
            return None
        return cls(
            token=access.token, repository=access.repository, api_url=access.api_url
        )

    def publish(
        self, events: Sequence[Event], *, command: str, run_url: str | None
    ) -> None:
        """Open or comment on issues for the events of one run of ``command``."""
        notices = plan_notices(events, command=command, run_url=run_url)
        if not notices:
            return

        self._ensure_labels([PRODUCT_LABEL, *(notice.kind.value for notice in notices)])

        for notice in notices:
            action = f"report {notice.kind.value} events on {self._repository}"
            call_github(
                action, functools.partial(self._post, notice), permission=_PERMISSION
            )

    def _post(self, notice: Notice) -> None:
        # Retried as a whole: after a lost answer, the search finds the issue that
        # the first try opened instead of opening a second one.
        issue = self._find_open_issue(notice.marker)
        if issue is None:
            body = f"{notice.body}\n{notice.marker}\n"
            labels = [PRODUCT_LABEL, notice.kind.value]
            opened = self._repo.create_issue(notice.title, body=body, labels=labels)
            logger.info("opened issue #%d: %s", opened.number, notice.title)
            return

        if notice.kind is EventKind.FAILED:
            issue.create_comment(notice.body)
            logger.info("added the failure to open issue #%d", issue.number)
            return
        logger.info("issue #%d already reports %s", issue.number, notice.title)

    def _find_open_issue(self, marker: str) -> Issue | None:
        # Only ``body`` is read: touching ``pull_request`` costs a request per issue.
        issues = self._repo.get_issues(state="open", labels=[PRODUCT_LABEL])
        return next((issue for issue in issues if marker in (issue.body or "")), None)

    def _ensure_labels(self, names: Iterable[str]) -> None:
        action = f"list the labels of {self._repository}"
        existing = call_github(action, self._label_names, permission=_PERMISSION)

        for name in names:
            if name.lower() not in existing:
                self._create_label(name)

    def _label_names(self) -> set[str]:
        return {label.name.lower() for label in self._repo.get_labels()}

    def _create_label(self, name: str) -> None:
        colour = _LABEL_COLOURS.get(name, "ededed")
        description = "Reported by m365-update-manager"
        try:
            retry_transient(lambda: self._repo.create_label(name, colour, description))
        except GithubException as exc:
            if exc.status == 422:
                return  # "already_exists": another run created it in between
            action = f"create the label {name} on {self._repository}"
            raise github_error(exc, action, permission=_PERMISSION) from exc
        except requests.RequestException as exc:
            action = f"create the label {name} on {self._repository}"
            raise github_error(exc, action, permission=_PERMISSION) from exc
        logger.info("created the label %s on %s", name, self._repository)


def _group(events: Iterable[Event]) -> dict[EventKind, list[Event]]:
    groups: dict[EventKind, list[Event]] = {kind: [] for kind in EventKind}
    for event in events:
        groups[event.kind].append(event)
    return {kind: group for kind, group in groups.items() if group}


def _section(kind: EventKind, events: Sequence[Event], command: str) -> str:
    rows = [
        "| App | From | To | When | Where the package lives |",
        "| --- | --- | --- | --- | --- |",
        *(_row(event) for event in events),
    ]
    parts = [f"### {_HEADINGS[kind]} ({len(events)})", "\n".join(rows)]
    if kind is EventKind.FAILED:
        parts.append("\n".join(_detail(event) for event in events))

    apps = sorted({event.app for event in events})
    app = apps[0] if len(apps) == 1 else "APP"
    parts.append(_NEXT_STEPS[kind].format(app=app, retry=_retry_advice(command)))
    return "\n\n".join(parts)


def _row(event: Event) -> str:
    cells = [
        event.app,
        event.from_version or "-",
        event.to_version or "-",
        _when(event.when),
        event.location or "-",
    ]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _detail(event: Event) -> str:
    return f"- **{_cell(event.app)}**: {_cell(event.detail or 'no detail recorded')}"


def _when(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{aware.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _cell(text: str) -> str:
    # Feed data ends up here: keep it on one line, out of the table syntax and
    # away from HTML (a stray "-->" would end the hidden marker early).
    flat = " ".join(text.split())
    flat = flat.replace("\\", "\\\\").replace("|", "\\|")
    return flat.replace("<", "&lt;").replace(">", "&gt;")


def _title(kind: EventKind, events: Sequence[Event], command: str) -> str:
    if kind is EventKind.FAILED:
        head = f"Failed ({command}): "
        items = sorted({event.app for event in events})
    else:
        head = f"{_HEADINGS[kind]}: "
        items = [_item(event) for event in events]
    return head + _shorten(items, _TITLE_LIMIT - len(head))


def _item(event: Event) -> str:
    return " ".join(f"{event.app} {event.to_version or ''}".split())


def _shorten(items: Sequence[str], limit: int) -> str:
    text = ""
    for keep in range(len(items), 0, -1):
        hidden = len(items) - keep
        text = ", ".join(items[:keep]) + (f", and {hidden} more" if hidden else "")
        if len(text) <= limit:
            return text
    return text[:limit]


SCRIPTS = {
    "check": "python check_updates.py",
    "schedule": "python promote.py (scheduled)",
    "manual": "python promote.py",
}


def _retry_advice(command: str) -> str:
    """Say how to try again; a rollback or promotion may already be in storage."""
    if command in SCRIPTS:
        return (
            f"Fix the cause; the next scheduled run tries again, or run "
            f"`{script_of(command)}` now."
        )
    return (
        "The storage work may already be done: look at `python promote.py --status` "
        "before running the command again (a second rollback undoes the first)."
    )


def script_of(command: str) -> str:
    """Return the command line a person would type for a run's ``command``."""
    return SCRIPTS.get(command, f"python promote.py --{command}")


def _marker(kind: EventKind, events: Sequence[Event], command: str) -> str:
    if kind is EventKind.FAILED:
        return f"<!-- m365-update-manager:failure={_marker_token(command)} -->"
    items = sorted({_marker_item(kind, e) for e in events})
    return f"<!-- m365-update-manager:event={kind.value}:{','.join(items)} -->"


def _marker_item(kind: EventKind, event: Event) -> str:
    """Name an event for de-duplication.

    Staged and held-back builds are the same event when re-run; a promotion or a
    rollback is a transition that may happen again (roll back, forward, back), so
    its moment is part of its name.
    """
    item = f"{_marker_token(event.app)}@{_marker_token(event.to_version or '-')}"
    if kind in {EventKind.PROMOTED, EventKind.ROLLED_BACK}:
        item += "~" + event.when.strftime("%Y%m%dT%H%M%SZ")
    return item


def _marker_token(text: str) -> str:
    # Keep markers exact and inert: no spaces, commas or "--" inside the comment.
    safe = "".join(c if c.isalnum() or c in "._+-" else "_" for c in text)
    while "--" in safe:
        safe = safe.replace("--", "-_")
    return safe or "_"
