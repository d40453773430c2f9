"""The check: find each app's newest full build, stage it, record it."""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from m365_update_manager.catalog import App
from m365_update_manager.events import Event, EventKind
from m365_update_manager.feed import FeedClient, FeedPackage, version_key
from m365_update_manager.manifest import AppState, Build, FeedState, HistoryEntry, Tier
from m365_update_manager.reconcile import orphan_builds, repair_tiers
from m365_update_manager.storage import BlobInfo, BlobStore, build_blob, tier_blob
from m365_update_manager.transfer import Expected, Transfer

log = logging.getLogger(__name__)

COMMAND = "check"
CHK_MISSES_TO_SKIP = 3  # a 404 can be passing; Remote Help has no -chk.xml at all


@dataclass
class CheckOutcome:
    """What the check did for one app."""

    outcome: str
    found: str | None = None
    events: list[Event] = field(default_factory=list)


class Stager:
    """Stages the newest full build of each app, one app at a time."""

    def __init__(
        self,
        *,
        feeds: FeedClient,
        transfer: Transfer,
        store: BlobStore,
        now: datetime,
        dry_run: bool,
    ) -> None:
        self.feeds = feeds
        self.transfer = transfer
        self.store = store
        self.now = now
        self.dry_run = dry_run

    def check(self, app: App, state: AppState, channel: str) -> CheckOutcome:
        """Bring one app's ``staged/`` up to the feed; ``state`` is updated in place.

        Storage is first brought back to the recorded state (what a killed run left
        half done), and blobs no record names are removed last, once a verified
        build a killed run left behind has had its chance to be adopted.
        """
        if self.dry_run:
            return self._follow_feed(app, state, channel)
        repair_tiers(self.store, app.name, state)
        outcome = self._follow_feed(app, state, channel)
        self._drop_orphans(app, state)
        return outcome

    def _follow_feed(self, app: App, state: AppState, channel: str) -> CheckOutcome:
        probed: bool | None = None
        pointer = None
        if not _skip_chk(state):
            probed, pointer = self.feeds.fetch_chk(app, channel)
        if pointer is not None and _already_handled(state, pointer):
            _note_chk(state, probed)
            return CheckOutcome("up to date", pointer)

        package = self.feeds.fetch_latest(app, channel)
        _record_feed(state, package, probed, self.now)
        return self._stage_if_new(app, state, package)

    def _stage_if_new(
        self, app: App, state: AppState, package: FeedPackage
    ) -> CheckOutcome:
        newest = version_key(package.version)
        if state.live and newest < version_key(state.live.version):
            return CheckOutcome(
                f"feed behind live {state.live.version}", package.version
            )
        known = state.build(package.version)
        if known is not None and _stored(self.store, known):
            return CheckOutcome("up to date", package.version)
        if known is None and _tier_is(state, package.version):
            return CheckOutcome("up to date", package.version)
        if self.dry_run:
            return CheckOutcome("would stage", package.version)

        build = self._store_build(app, state, package)
        state.builds = [*(b for b in state.builds if b is not known), build]
        if not self._point_staged(app, state, build):
            assert state.staged is not None  # noqa: S101  # only a newer staged build stays
            return CheckOutcome(
                f"kept in builds/, older than staged {state.staged.version} "
                "(the feed went back)",
                package.version,
            )
        event = Event(
            EventKind.STAGED,
            app.name,
            _version(state.live),
            build.version,
            self.now,
            self.store.location(tier_blob("staged", app.name)),
        )
        return CheckOutcome("staged", package.version, [event])

    def _store_build(self, app: App, state: AppState, package: FeedPackage) -> Build:
        blob = build_blob(app.name, package.version, package.file_name)
        existing = self.store.info(blob)
        expected = _earlier(state, package.version)
        if existing is not None and _adoptable(existing, package.version, expected):
            log.info("%s: adopting %s, already verified in storage", app.name, blob)
            size, sha256 = existing.size, str(existing.sha256)
        else:
            received = self.transfer.run(
                package.url,
                self.store.writer(blob),
                version=package.version,
                expected=expected,
                size_hint=package.size_hint,
            )
            size, sha256 = received.size, received.sha256
        return Build(
            version=package.version,
            sha256=sha256,
            size=size,
            download_url=package.url,
            blob=blob,
            first_seen=_first_seen(state, package),
        )

    def _point_staged(self, app: App, state: AppState, build: Build) -> bool:
        """Point ``staged/`` at ``build`` unless a newer build is staged already."""
        previous = state.staged
        if previous is not None and version_key(previous.version) > version_key(
            build.version
        ):
            return False
        self.store.copy(build.blob, tier_blob("staged", app.name))
        state.staged = Tier(
            version=build.version,
            sha256=build.sha256,
            download_url=build.download_url,
            staged_at=build.first_seen,
        )
        state.record(
            HistoryEntry(
                at=self.now,
                action="staged",
                from_version=_version(previous),
                to_version=build.version,
                reason="new build in the feed",
                command=COMMAND,
            )
        )
        return True

    def _drop_orphans(self, app: App, state: AppState) -> None:
        for orphan in orphan_builds(self.store, app.name, state):
            log.warning("%s: removing %s, which no record names", app.name, orphan.name)
            self.store.delete(orphan.name)


def _adoptable(info: BlobInfo, version: str, expected: Expected | None) -> bool:
    """A blob committed by an earlier, killed run carries the metadata of a verified build."""
    if info.version != version or not info.sha256:
        return False
    return expected is None or info.sha256 == expected.sha256


def _stored(store: BlobStore, build: Build) -> bool:
    info = store.info(build.blob)
    return info is not None and info.holds(build.version, build.sha256)


def _skip_chk(state: AppState) -> bool:
    """Go straight to the manifest once ``-chk.xml`` was missing several runs running."""
    return state.feed is not None and state.feed.chk_misses >= CHK_MISSES_TO_SKIP


def _note_chk(state: AppState, probed: bool | None) -> None:
    """Count consecutive runs without a ``-chk.xml``; one answer resets the count."""
    feed = state.feed
    if feed is None or probed is None:
        return
    misses = 0 if probed else feed.chk_misses + 1
    if (feed.chk, feed.chk_misses) != (probed, misses):
        state.feed = feed.model_copy(update={"chk": probed, "chk_misses": misses})


def _already_handled(state: AppState, version: str) -> bool:
    """The pointer names the build recorded at the last check, and it was dealt with.

    A pointer that moved, even backwards, means reading the manifest: the feed
    record must follow it, so that promotion can hold back a pulled build.
    """
    feed = state.feed
    if feed is None or feed.version != version:
        return False
    behind_live = state.live is not None and version_key(version) < version_key(
        state.live.version
    )
    return behind_live or state.build(version) is not None or _tier_is(state, version)


def _tier_is(state: AppState, version: str) -> bool:
    return any(
        t is not None and t.version == version for t in (state.staged, state.live)
    )


def _record_feed(
    state: AppState, package: FeedPackage, probed: bool | None, now: datetime
) -> None:
    """Record what the feed offers; ``seen_at`` moves only when the offer changes."""
    feed = state.feed
    if (
        feed is not None
        and feed.version == package.version
        and feed.download_url == package.url
    ):
        _note_chk(state, probed)
        return
    state.feed = FeedState(
        version=package.version,
        download_url=package.url,
        seen_at=now,
        chk=bool(probed),
        chk_misses=0 if probed else 1,
    )


def _first_seen(state: AppState, package: FeedPackage) -> datetime:
    known = state.build(package.version)
    if known is not None:
        return known.first_seen
    assert state.feed is not None  # noqa: S101  # recorded before staging
    return state.feed.seen_at


def _earlier(state: AppState, version: str) -> Expected | None:
    build = state.build(version)
    return None if build is None else Expected(build.size, build.sha256)


def _version(tier: Tier | None) -> str | None:
    return None if tier is None else tier.version
