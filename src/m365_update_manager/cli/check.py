"""``check_updates.py``: stage every app's newest full build from the MAU feed."""

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from m365_update_manager.catalog import App, load_catalog, select_apps
from m365_update_manager.errors import M365Error
from m365_update_manager.events import Event, EventKind
from m365_update_manager.feed import FeedClient
from m365_update_manager.logs import configure_logging
from m365_update_manager.manifest import AppState, Manifest
from m365_update_manager.net import PolicySession
from m365_update_manager.runtime import Report, Runtime, exit_code_for
from m365_update_manager.settings import Settings, load_settings
from m365_update_manager.staging import CheckOutcome, Stager
from m365_update_manager.transfer import Transfer

log = logging.getLogger("m365_update_manager")

COMMAND = "check"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line; argparse exits 2 on bad arguments."""
    parser = argparse.ArgumentParser(
        prog="check_updates.py",
        description="Stage each app's newest full Microsoft 365 for Mac build under staged/.",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="NAME",
        help="limit the run to this app (repeatable); wins over M365_APPS",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read the feeds and print what would be staged; write nothing",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail: -v for DEBUG, -vv for library DEBUG too",
    )
    args = parser.parse_args(argv)
    args.app = [n for value in args.app for n in re.split(r"[,\s]+", value) if n]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; return 0 on success, 1 when an app failed, 2 on bad settings."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        settings = load_settings()
        apps = select_apps(load_catalog(settings.catalog), args.app or settings.apps)
        runtime = Runtime(settings, COMMAND)
        report = _dry_run(runtime, apps) if args.dry_run else _run(runtime, apps)
    except M365Error as exc:
        return exit_code_for(exc)
    return 1 if report.failed else 0


def _run(runtime: Runtime, apps: list[App]) -> Report:
    report = Report()
    with runtime.writing() as (base, work):
        _record_policy(runtime.settings, work)
        stager = _stager(runtime, dry_run=False)
        for app in apps:
            _check_one(runtime, stager, app, work, report)
        staged = [e for e in report.events if e.kind is EventKind.STAGED]
        runtime.save(base, work, _message(staged), report)
    _summarise(apps, report)
    runtime.publish(report)
    return report


def _dry_run(runtime: Runtime, apps: list[App]) -> Report:
    report = Report()
    manifest = runtime.load()
    stager = _stager(runtime, dry_run=True)
    would = []
    for app in apps:
        outcome = _check_one(
            runtime, stager, app, manifest.model_copy(deep=True), report
        )
        if outcome.outcome == "would stage":
            would.append(f"{app.name} {outcome.found}")
    for line in would:
        print(f"would stage {line}")  # noqa: T201  # the plan is the command's output
    if not would:
        print("nothing to stage")  # noqa: T201
    _summarise(apps, report, would=len(would))
    return report


def _check_one(
    runtime: Runtime, stager: Stager, app: App, work: Manifest, report: Report
) -> CheckOutcome:
    state = work.apps.get(app.name) or AppState.new(app)
    channel = app.channel or runtime.settings.channel or work.channel
    trial = state.model_copy(deep=True)
    try:
        outcome = stager.check(app, trial, channel)
    except M365Error as exc:
        report.fail(app.name, exc, runtime.now)
        outcome = CheckOutcome("failed")
    else:
        work.apps[app.name] = trial
        report.events += outcome.events
    _log_line(app, work.apps.get(app.name) or state, outcome)
    return outcome


def _stager(runtime: Runtime, *, dry_run: bool) -> Stager:
    settings = runtime.settings
    session = PolicySession(settings.allowed_hosts, settings.http_timeout)
    return Stager(
        feeds=FeedClient(session, settings.feed_base_url, settings.retry_seconds),
        transfer=Transfer(
            session,
            block_size=settings.block_size,
            max_bytes=settings.max_package_bytes,
            retry_seconds=settings.retry_seconds,
        ),
        store=runtime.store,
        now=runtime.now,
        dry_run=dry_run,
    )


def _record_policy(settings: Settings, work: Manifest) -> None:
    """The manifest records the channel and lag in force; settings win."""
    if settings.channel is not None:
        work.channel = settings.channel
    if settings.lag_days is not None:
        work.lag_days = settings.lag_days


def _log_line(app: App, state: AppState, outcome: CheckOutcome) -> None:
    live = state.live.version if state.live else "-"
    staged = state.staged.version if state.staged else "-"
    log.info(
        "%s: live=%s staged=%s found=%s outcome=%s",
        app.name,
        live,
        staged,
        outcome.found or "-",
        outcome.outcome,
    )


def _summarise(apps: list[App], report: Report, would: int | None = None) -> None:
    failed = sum(1 for e in report.events if e.kind is EventKind.FAILED)
    staged = sum(1 for e in report.events if e.kind is EventKind.STAGED)
    done = f"{would} would be staged" if would is not None else f"{staged} staged"
    plural = "" if len(apps) == 1 else "s"
    log.info("checked %d app%s: %s, %d failed", len(apps), plural, done, failed)


def _message(staged: list[Event]) -> str:
    if not staged:
        return "Record feed state"
    builds = ", ".join(f"{e.app} {e.to_version}" for e in staged)
    return f"Stage {builds}"


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
