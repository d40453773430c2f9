"""What both commands share: the store, the state file, GitHub and the report."""

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from m365_update_manager.errors import GitHubError, M365Error
from m365_update_manager.events import Event, EventKind
from m365_update_manager.logs import redact
from m365_update_manager.manifest import (
    Manifest,
    ManifestFile,
    format_time,
    merge,
    parse_manifest_text,
)
from m365_update_manager.notify import (
    GitHubNotifier,
    Notifier,
    PrintNotifier,
    render_markdown,
    write_step_summary,
)
from m365_update_manager.settings import Settings
from m365_update_manager.state_sync import GitHubState
from m365_update_manager.storage import BlobStore
from m365_update_manager.store_local import LocalBlobStore

log = logging.getLogger(__name__)

JOURNAL_BLOB = "state/manifest.json"  # the state as storage holds it, every change
COMMITTED_BLOB = "state/committed.json"  # the state last committed to GitHub


def _is_newer(journal: Manifest, recorded: Manifest) -> bool:
    """Every saved change bumps ``revision``; a hand edit of the record does not."""
    return journal.revision > recorded.revision


@dataclass
class Report:
    """What a run has to tell: events for people and whether anything failed."""

    events: list[Event] = field(default_factory=list)
    failed: bool = False

    def fail(self, app: str, error: M365Error, now: datetime, where: str = "") -> None:
        """Log and record one app's failure as an event; the run goes on."""
        message = redact(str(error))
        log.error("%s: %s", app, message)
        annotate_error(f"{app}: {message}")
        self.failed = True
        self.events.append(
            Event(EventKind.FAILED, app, None, None, now, where, message)
        )


class Runtime:
    """One run's connections: settings, store, state file, GitHub and notifier."""

    def __init__(self, settings: Settings, command: str) -> None:
        self.settings = settings
        self.command = command
        self.now = settings.clock()
        self.store: BlobStore = open_store(settings)
        self.state_file = ManifestFile(settings.manifest)
        self.record_behind = False
        self.recorded: Manifest | None = None
        self.remote = GitHubState.from_settings(settings)
        self.notifier: Notifier = (
            GitHubNotifier.from_settings(settings) or PrintNotifier()
        )
        if settings.now is not None:
            log.warning(
                "M365_NOW is set: this run takes the time to be %s",
                self.now.isoformat(),
            )

    @property
    def repo_path(self) -> str:
        """Return the state file's path inside the repository."""
        path = self.settings.manifest
        return path.name if path.is_absolute() else path.as_posix()

    def load(self) -> Manifest:
        """Read the state, preferring the store's journal when the record is behind it.

        The record is the branch head on GitHub when configured, else the file. The
        store keeps a journal copy written with every change to storage; when a
        run's commit failed, the journal is newer and is what storage holds.
        """
        recorded = self.recorded = self._load_recorded()
        journal = self._read_state(JOURNAL_BLOB)
        if journal is None or not _is_newer(journal, recorded):
            return recorded
        self.record_behind = True
        if self.remote is None:
            log.warning(
                "%s is missing or older than the store's copy %s; carrying on from "
                "the store's copy, which matches storage",
                self.state_file.path,
                JOURNAL_BLOB,
            )
            return journal
        log.warning(
            "%s on GitHub is behind the store's copy %s (an earlier commit failed); "
            "carrying on from the store's copy, with any hand edits made since",
            self.repo_path,
            JOURNAL_BLOB,
        )
        committed = self._read_state(COMMITTED_BLOB) or recorded
        return merge(committed, journal, recorded)

    def _load_recorded(self) -> Manifest:
        if self.remote is None:
            return self.state_file.load()
        text = self.remote.fetch(self.repo_path)
        if text is None:
            return self.state_file.load()
        return parse_manifest_text(text, f"{self.repo_path} on GitHub")

    def _read_state(self, name: str) -> Manifest | None:
        if self.store.info(name) is None:
            return None
        text = b"".join(self.store.read(name)).decode("utf-8", "replace")
        return parse_manifest_text(text, self.store.location(name))

    def _write_state(self, name: str, text: str) -> None:
        data = text.encode()
        writer = self.store.writer(name)
        try:
            writer.write(data)
            writer.commit(format_time(self.now), hashlib.sha256(data).hexdigest())
        except BaseException:
            writer.discard()
            raise

    @contextmanager
    def writing(self) -> Iterator[tuple[Manifest, Manifest]]:
        """Hold the store's lock for the whole run; yield (as read, to change)."""
        if self.remote is None:
            log.info(
                "no GITHUB_TOKEN/GITHUB_REPOSITORY: the state is %s only",
                self.state_file.path,
            )
        self.state_file.check_writable()
        self.store.ensure_ready()
        with self.store.lock(self.settings.lock_timeout):
            base = self.load()
            yield base, base.model_copy(deep=True)

    def save(
        self, base: Manifest, work: Manifest, message: str, report: Report
    ) -> bool:
        """Write the state when it changed: the local file first, then GitHub."""
        if work.content() == base.content() and not self.record_behind:
            return False
        work.last_updated = self.now
        work.revision = base.revision + 1
        self.state_file.save(work)
        self._write_state(JOURNAL_BLOB, work.dump())
        if self.remote is not None:
            self._commit(base, work, message, report)
        return True

    def _commit(
        self, base: Manifest, work: Manifest, message: str, report: Report
    ) -> None:
        """Commit to GitHub, re-applying this run's changes to what is there now."""
        assert self.remote is not None  # noqa: S101  # only called with a remote
        # Behind the journal, the record lacks the journal's changes too.
        ours_from = self.recorded if self.record_behind and self.recorded else base
        # What GitHub held when this run started is the base of the store's copy:
        # if this commit fails, the next run merges hand edits made since onto it.
        self._write_state(COMMITTED_BLOB, (self.recorded or base).dump())
        sent: list[str] = []

        def update(current: str | None) -> str:
            if current is None:
                text = work.dump()
            else:
                theirs = parse_manifest_text(current, f"{self.repo_path} on GitHub")
                text = merge(ours_from, work, theirs).dump()
            sent[:] = [text]
            return text

        try:
            self.remote.commit(self.repo_path, update, message)
        except GitHubError as exc:
            report.fail("manifest.json", exc, self.now)
            log.warning(
                "the state is saved in %s and in the store's copy %s; the next run "
                "commits it",
                self.state_file.path,
                JOURNAL_BLOB,
            )
            return
        self._write_state(COMMITTED_BLOB, sent[-1])

    def publish(self, report: Report) -> None:
        """Tell people what happened: issues (or stdout) and the step summary."""
        markdown = render_markdown(
            report.events, command=self.command, run_url=self.run_url
        )
        try:
            write_step_summary(self.settings.step_summary, markdown)
        except GitHubError as exc:
            log.error("%s", exc)
            report.failed = True
        if not report.events:
            return
        try:
            self.notifier.publish(
                report.events, command=self.command, run_url=self.run_url
            )
        except GitHubError as exc:
            log.error("notification failed: %s", exc)
            report.failed = True

    @property
    def run_url(self) -> str | None:
        """Return the link to this workflow run, when running in GitHub Actions."""
        run_id = self.settings.github_run_id
        repository = self.settings.github_repository
        if not run_id or not repository:
            return None
        return f"{self.settings.github_server_url}/{repository}/actions/runs/{run_id}"


def exit_code_for(error: M365Error) -> int:
    """Report a run-stopping error in one line (and as an annotation); return its code."""
    message = redact(str(error))
    log.error("%s", message)
    annotate_error(message)
    return error.exit_code


def annotate_error(message: str) -> None:
    """Print a GitHub Actions error annotation when running in Actions."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::error::{message}")  # noqa: T201  # the workflow command protocol is stdout


def open_store(settings: Settings) -> BlobStore:
    """Return the store the settings name: Azure, Azurite or the local folder."""
    if settings.connection_string is not None or settings.account_url:
        from m365_update_manager.store_azure import AzureBlobStore  # noqa: PLC0415  # the Azure SDK loads only when used

        return AzureBlobStore.from_settings(settings)
    return LocalBlobStore(settings.store_dir)
