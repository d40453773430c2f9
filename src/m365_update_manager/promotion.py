"""Promotion, rollback, holds and the lag policy.

Every build that reaches ``live/`` has been public for at least its lag: the
candidate is the newest recorded build that has aged its lag, is newer than live,
is still offered by the feed and is not blocked by a rollback. A build that keeps
being superseded therefore still ships once an older one ages, so weekly releases
with a 14-day lag cannot starve ``live/``.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from m365_update_manager.errors import PromotionError
from m365_update_manager.events import Event, EventKind
from m365_update_manager.feed import version_key
from m365_update_manager.manifest import AppState, Build, HistoryEntry, Hold, Tier
from m365_update_manager.reconcile import restoring
from m365_update_manager.storage import BlobStore, tier_blob

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What promotion would do for one app now, and why."""

    app: str
    action: str  # promote, wait, held, nothing
    build: Build | None = None
    reason: str = ""
    due: datetime | None = None
    pulled: list[Build] = field(default_factory=list)
    blocked: list[Build] = field(default_factory=list)


def due_at(build: Build, lag_days: float) -> datetime:
    """Return the moment a build has aged ``lag_days`` since it was first seen."""
    return build.first_seen + timedelta(days=lag_days)


def plan(app: str, state: AppState, lag_days: float, now: datetime) -> Plan:
    """Decide from the recorded state alone whether an app's build is due."""
    decision = _decide(app, state, lag_days, now)
    live = version_key(state.live.version) if state.live else None
    decision.blocked = [
        b
        for b in state.builds
        if b.blocked and (live is None or version_key(b.version) > live)
    ]
    return decision


def _decide(app: str, state: AppState, lag_days: float, now: datetime) -> Plan:
    live = version_key(state.live.version) if state.live else None
    newer = [
        b
        for b in state.builds
        if not b.blocked and (live is None or version_key(b.version) > live)
    ]
    pulled = [b for b in newer if _pulled(state, b)]
    offered = sorted(
        (b for b in newer if b not in pulled), key=lambda b: version_key(b.version)
    )
    if not offered:
        reason = (
            "nothing newer than live"
            if not pulled
            else "the feed no longer offers the newer build"
        )
        return Plan(app, "nothing", reason=reason, pulled=pulled)
    if state.hold is not None:
        return Plan(
            app, "held", offered[-1], f"on hold: {state.hold.reason}", pulled=pulled
        )

    aged = [b for b in offered if due_at(b, lag_days) <= now]
    if aged:
        age = (now - aged[-1].first_seen).total_seconds() / 86400
        reason = f"aged {age:.1f} days, lag {lag_days:g}"
        return Plan(app, "promote", aged[-1], reason, pulled=pulled)
    first = min(offered, key=lambda b: due_at(b, lag_days))
    return Plan(app, "wait", first, "ageing", due_at(first, lag_days), pulled)


def _pulled(state: AppState, build: Build) -> bool:
    """A build newer than the newest the feed offered at the last check was pulled."""
    if state.feed is None:
        return False
    return version_key(build.version) > version_key(state.feed.version)


def fast_track_plan(app: str, state: AppState) -> Plan:
    """Return a plan promoting the newest build newer than live, whatever its age.

    Refused while the app is on hold: a hold is released explicitly first.
    """
    if state.hold is not None:
        raise PromotionError(
            f"{app}: on hold ({state.hold.reason}); release it first with "
            f"'python promote.py --release {app}'; nothing changed"
        )
    live = version_key(state.live.version) if state.live else None
    newer = [
        b
        for b in state.builds
        if (live is None or version_key(b.version) > live) and not _pulled(state, b)
    ]
    if not newer:
        raise PromotionError(
            f"{app}: no build newer than live that the feed still offers; "
            "run check_updates.py first"
        )
    return Plan(
        app, "promote", max(newer, key=lambda b: version_key(b.version)), "fast track"
    )


class Promoter:
    """Carries out promotions and rollbacks: copies first, then the state."""

    def __init__(self, store: BlobStore, now: datetime, command: str) -> None:
        self.store = store
        self.now = now
        self.command = command

    def promote(self, app: str, state: AppState, build: Build, reason: str) -> Event:
        """Rotate live to previous and ``build`` to live, in storage then in ``state``."""
        old_live = state.live
        with restoring(self.store, app, state):
            if old_live is not None:
                self._copy_version(app, state, old_live.version, "previous")
            self.store.copy(build.blob, tier_blob("live", app))
            if state.staged is not None and state.staged.version == build.version:
                self.store.delete(tier_blob("staged", app))
                state.staged = None

        state.previous = old_live
        state.live = Tier(
            version=build.version,
            sha256=build.sha256,
            download_url=build.download_url,
            staged_at=build.first_seen,
            promoted_at=self.now,
        )
        state.builds = _kept(state)
        action = "fast-tracked" if self.command == "fast-track" else "promoted"
        self._record(state, action, old_live, build.version, reason)
        return self._event(EventKind.PROMOTED, app, old_live, build.version, reason)

    def rollback(self, app: str, state: AppState, reason: str) -> Event:
        """Make previous live again and the rolled-back build previous; blocks it."""
        old_live, previous = state.live, state.previous
        if previous is None or old_live is None:
            raise PromotionError(
                f"{app}: there is no previous build to roll back to; nothing changed"
            )
        with restoring(self.store, app, state):
            self._copy_version(app, state, previous.version, "live")
            self._copy_version(app, state, old_live.version, "previous")

        state.live = previous.model_copy(update={"promoted_at": self.now})
        state.previous = old_live
        state.builds = [
            b.model_copy(
                update={"blocked": _blocked_after_rollback(b, old_live, previous)}
            )
            for b in state.builds
        ]
        self._record(state, "rolled-back", old_live, previous.version, reason)
        return self._event(
            EventKind.ROLLED_BACK, app, old_live, previous.version, reason
        )

    def hold(self, app: str, state: AppState, reason: str) -> None:
        """Stop promotion of an app until it is released."""
        if state.hold is not None:
            log.warning(
                "%s: was on hold already (%s); the new reason replaces it",
                app,
                state.hold.reason,
            )
        state.hold = Hold(reason=reason, since=self.now)
        self._record(state, "held", state.live, None, reason)

    def release(self, app: str, state: AppState, reason: str) -> None:
        """Lift a hold; the next promotion run decides as usual."""
        if state.hold is None:
            raise PromotionError(f"{app}: is not on hold; nothing to release")
        state.hold = None
        self._record(state, "released", state.live, None, reason)

    def _copy_version(self, app: str, state: AppState, version: str, tier: str) -> None:
        build = state.build(version)
        if build is None:
            raise PromotionError(
                f"{app}: no build record for {version}; run 'python promote.py --verify'"
            )
        self.store.copy(build.blob, tier_blob(tier, app))

    def _record(
        self,
        state: AppState,
        action: str,
        before: Tier | None,
        after: str | None,
        reason: str,
    ) -> None:
        state.record(
            HistoryEntry(
                at=self.now,
                action=action,
                from_version=None if before is None else before.version,
                to_version=after,
                reason=reason,
                command=self.command,
            )
        )

    def _event(
        self, kind: EventKind, app: str, before: Tier | None, after: str, reason: str
    ) -> Event:
        return Event(
            kind,
            app,
            None if before is None else before.version,
            after,
            self.now,
            self.store.location(tier_blob("live", app)),
            reason,
        )


def _blocked_after_rollback(build: Build, rolled_back: Tier, restored: Tier) -> bool:
    """The build taken off live is never promoted again on schedule; the restored one is free."""
    if build.version == rolled_back.version:
        return True
    return build.blocked and build.version != restored.version


def _kept(state: AppState) -> list[Build]:
    """Keep previous, live and every newer build; older ones leave the record."""
    floor = state.previous or state.live
    if floor is None:
        return state.builds
    lowest = version_key(floor.version)
    return [b for b in state.builds if version_key(b.version) >= lowest]
