"""What promote.py shows people: one log line per app and the status table."""

import logging
from collections.abc import Callable
from datetime import datetime

from m365_update_manager.manifest import AppState, Manifest
from m365_update_manager.promotion import Plan, plan

log = logging.getLogger("m365_update_manager")


def log_plan(
    name: str, state: AppState, decision: Plan | None, *, dry_run: bool
) -> None:
    """Log the one INFO line of an app: its tiers and what promotion did or would do."""
    outcome = "failed" if decision is None else outcome_of(decision, dry_run=dry_run)
    log.info(
        "%s: live=%s staged=%s outcome=%s",
        name,
        version_of(state.live),
        version_of(state.staged),
        outcome,
    )


def outcome_of(decision: Plan, *, dry_run: bool) -> str:
    """Say what promotion did, or would do, for one app."""
    pulled = ", ".join(b.version for b in decision.pulled)
    held_back = f"; held back {pulled} (no longer in the feed)" if pulled else ""
    if decision.action == "promote" and decision.build is not None:
        verb = "would promote" if dry_run else "promoted"
        return f"{verb} {decision.build.version} ({decision.reason}){held_back}"
    return next_step(decision) + held_back


def print_status(
    manifest: Manifest, lag_of: Callable[[str], float], now: datetime
) -> None:
    """Print per app the staged, live and previous builds, their ages, what is next."""
    rows = [("app", "staged", "live", "previous", "next")]
    for name, state in sorted(manifest.apps.items()):
        decision = plan(name, state, lag_of(name), now)
        rows.append(
            (
                name,
                aged(state.staged, "staged_at", now),
                aged(state.live, "promoted_at", now),
                aged(state.previous, "promoted_at", now),
                next_step(decision),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]))  # noqa: T201  # the table is the output


def aged(tier: object, stamp: str, now: datetime) -> str:
    """Return a tier's version and how many days it has been there."""
    if tier is None:
        return "-"
    since = getattr(tier, stamp, None)
    version = getattr(tier, "version", "?")
    if since is None:
        return str(version)
    return f"{version} ({(now - since).total_seconds() / 86400:.1f} d)"


def next_step(decision: Plan) -> str:
    """Say what comes next for an app: a due date, now, or why nothing."""
    if decision.action == "wait" and decision.build and decision.due:
        return f"{decision.build.version} due {when(decision.due)}"
    if decision.action == "promote" and decision.build:
        return f"{decision.build.version} due now"
    if decision.blocked:
        versions = ", ".join(b.version for b in decision.blocked)
        return f"{decision.reason}; {versions} blocked by a rollback"
    return decision.reason or decision.action


def when(moment: datetime) -> str:
    """Return a moment as YYYY-MM-DD HH:MM UTC."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def version_of(tier: object) -> str:
    """Return a tier's version, or - when the tier is empty."""
    return str(getattr(tier, "version", "-")) if tier is not None else "-"
