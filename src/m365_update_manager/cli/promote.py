"""``promote.py``: promote aged builds, roll back, hold, release, show and verify."""

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from m365_update_manager.audit import audit
from m365_update_manager.catalog import APP_NAME, App, load_catalog
from m365_update_manager.cli.views import log_plan, print_status, version_of
from m365_update_manager.errors import M365Error, PromotionError, SettingsError
from m365_update_manager.events import Event, EventKind
from m365_update_manager.logs import configure_logging
from m365_update_manager.manifest import AppState, Manifest, clean_reason
from m365_update_manager.promotion import Plan, Promoter, fast_track_plan, plan
from m365_update_manager.reconcile import drop_old_builds, repair_tiers
from m365_update_manager.runtime import Report, Runtime, exit_code_for
from m365_update_manager.settings import load_settings

log = logging.getLogger("m365_update_manager")

DEFAULT_LAG_DAYS = 14.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line; argparse exits 2 on bad arguments."""
    parser = argparse.ArgumentParser(
        prog="promote.py",
        description="Promote staged builds that aged their lag; roll back; hold; verify.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rollback", metavar="APP", help="make previous/ live again")
    action.add_argument(
        "--hold", metavar="APP", help="never promote APP until released"
    )
    action.add_argument("--release", metavar="APP", help="lift a hold on APP")
    action.add_argument(
        "--fast-track",
        metavar="APP",
        help="promote APP's newest staged build now (urgent fixes)",
    )
    action.add_argument(
        "--status", action="store_true", help="show every app's tiers and due dates"
    )
    action.add_argument(
        "--verify", action="store_true", help="check the store against manifest.json"
    )
    parser.add_argument(
        "--reason", default="", help="why (required with --hold and --fast-track)"
    )
    parser.add_argument(
        "--deep", action="store_true", help="with --verify: hash every blob's bytes"
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="NAME",
        help="limit a scheduled promotion to this app (repeatable)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan; write nothing"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail"
    )
    args = parser.parse_args(argv)
    args.app = [n for value in args.app for n in re.split(r"[,\s]+", value) if n]
    _check_combination(parser, args)
    for name in (args.rollback, args.hold, args.release, args.fast_track, *args.app):
        if name is not None and not APP_NAME.match(name):
            parser.error(f"{name!r} is not an app short name such as 'word'")
    return args


def _check_combination(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    """Refuse flags that would be ignored, so that no command runs by surprise."""
    single = args.rollback or args.hold or args.release or args.fast_track
    if (args.hold or args.fast_track) and not clean_reason(args.reason):
        parser.error("--hold and --fast-track need --reason TEXT")
    if args.reason and not single:
        parser.error("--reason goes with --rollback, --hold, --release or --fast-track")
    if args.deep and not args.verify:
        parser.error("--deep goes with --verify")
    if args.app and (single or args.verify):
        parser.error(
            "--app limits a scheduled promotion or --status; name one app otherwise"
        )
    if args.dry_run and (args.status or args.verify):
        parser.error("--status and --verify write nothing already; drop --dry-run")


def main(argv: Sequence[str] | None = None) -> int:
    """Run promote.py; return 0 on success, 1 when something failed, 2 on bad settings."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        settings = load_settings()
        catalog = load_catalog(settings.catalog)
        runtime = Runtime(settings, _command(args))
        return _dispatch(runtime, catalog, args)
    except BrokenPipeError:
        sys.stderr.close()  # the reader (a pager, head) went away: not an error
        return 0
    except M365Error as exc:
        return exit_code_for(exc)


def _command(args: argparse.Namespace) -> str:
    for name in ("rollback", "hold", "release", "fast_track"):
        if getattr(args, name):
            return name.replace("_", "-")
    if args.status or args.verify:
        return "status"
    return "schedule" if os.environ.get("GITHUB_EVENT_NAME") == "schedule" else "manual"


def _dispatch(
    runtime: Runtime, catalog: dict[str, App], args: argparse.Namespace
) -> int:
    if args.status:
        manifest = runtime.load()
        if args.app:
            shown = {n: s for n, s in manifest.apps.items() if n in args.app}
            manifest = manifest.model_copy(update={"apps": shown})
        print_status(
            manifest, lambda name: _lag(name, catalog, runtime, manifest), runtime.now
        )
        return 0
    if args.verify:
        return _verify(runtime, deep=args.deep)
    if args.hold or args.release:
        return _hold_or_release(runtime, catalog, args)
    if args.rollback or args.fast_track:
        return _single(runtime, catalog, args)
    return _scheduled(runtime, catalog, args)


def _lag(
    name: str, catalog: dict[str, App], runtime: Runtime, manifest: Manifest
) -> float:
    app = catalog.get(name)
    if app is not None and app.lag_days is not None:
        return app.lag_days
    if runtime.settings.lag_days is not None:
        return runtime.settings.lag_days
    return manifest.lag_days if manifest.lag_days is not None else DEFAULT_LAG_DAYS


def _selected(
    manifest: Manifest,
    catalog: dict[str, App],
    runtime: Runtime,
    args: argparse.Namespace,
) -> list[str]:
    """Return the apps to promote: named ones, else every catalog app with a state.

    An app named with ``--app`` must have a recorded state; one listed in
    ``M365_APPS`` without a state yet (its first check failed) is only skipped.
    """
    names = args.app or list(runtime.settings.apps)
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise SettingsError(
            f"unknown app {', '.join(unknown)}: not in the catalog (M365_CATALOG?)"
        )
    missing = [n for n in names if n not in manifest.apps]
    if missing and args.app:
        raise SettingsError(
            f"no recorded state for {', '.join(missing)}; run check_updates.py first"
        )
    for name in missing:
        log.warning("%s: no recorded state yet (no check staged it); skipped", name)
    if names:
        return [n for n in names if n in manifest.apps]
    for name in sorted(set(manifest.apps) - set(catalog)):
        log.info("%s: not in the catalog any more; not promoted", name)
    return sorted(set(manifest.apps) & set(catalog))


def _scheduled(
    runtime: Runtime, catalog: dict[str, App], args: argparse.Namespace
) -> int:
    report = Report()
    if args.dry_run:
        manifest = runtime.load()
        due = []
        for name in _selected(manifest, catalog, runtime, args):
            state = manifest.apps[name]
            lag = _lag(name, catalog, runtime, manifest)
            decision = plan(name, state, lag, runtime.now)
            log_plan(name, state, decision, dry_run=True)
            if decision.action == "promote" and decision.build is not None:
                due.append(f"would promote {name} {decision.build.version}")
        print("\n".join(due) or "nothing to promote")  # noqa: T201  # the plan
        return 0

    with runtime.writing() as (base, work):
        if runtime.settings.lag_days is not None:
            work.lag_days = runtime.settings.lag_days
        promoter = Promoter(runtime.store, runtime.now, runtime.command)
        names = _selected(work, catalog, runtime, args)
        for name in names:
            _promote_one(
                runtime,
                promoter,
                name,
                work,
                _lag(name, catalog, runtime, work),
                report,
            )
        runtime.save(base, work, _message(report.events), report)
        drop_old_builds(runtime.store, work)  # also what a run killed before it left
    _summarise(names, report)
    runtime.publish(report)
    return 1 if report.failed else 0


def _summarise(names: list[str], report: Report) -> None:
    def count(kind: EventKind) -> int:
        return len({e.app for e in report.events if e.kind is kind})

    log.info(
        "promotion over %d app%s: %d promoted, %d held back, %d failed",
        len(names),
        "" if len(names) == 1 else "s",
        count(EventKind.PROMOTED),
        count(EventKind.HELD),
        count(EventKind.FAILED),
    )


def _promote_one(
    runtime: Runtime,
    promoter: Promoter,
    name: str,
    work: Manifest,
    lag: float,
    report: Report,
) -> None:
    trial = work.apps[name].model_copy(deep=True)
    try:
        repair_tiers(runtime.store, name, trial)
        decision = plan(name, trial, lag, runtime.now)
        report.events += _held_back_events(runtime, decision)
        if decision.action == "promote" and decision.build is not None:
            report.events.append(
                promoter.promote(name, trial, decision.build, decision.reason)
            )
        log_plan(name, trial, decision, dry_run=False)
    except M365Error as exc:
        report.fail(name, exc, runtime.now)
        log_plan(name, work.apps[name], None, dry_run=False)
        return
    work.apps[name] = trial


def _held_back_events(runtime: Runtime, decision: Plan) -> list[Event]:
    return [
        Event(
            EventKind.HELD,
            decision.app,
            None,
            b.version,
            runtime.now,
            runtime.store.location(b.blob),
            "the feed no longer offers this build (pulled, or the feed went backwards); not promoted",
        )
        for b in decision.pulled
    ]


def _single(runtime: Runtime, catalog: dict[str, App], args: argparse.Namespace) -> int:
    name = args.rollback or args.fast_track
    reason = clean_reason(args.reason) or (
        "rollback" if args.rollback else "fast track"
    )
    report = Report()
    if args.dry_run:
        return _print_single_plan(runtime.load(), name, args, catalog)

    with runtime.writing() as (base, work):
        state = _state(work, name, catalog)
        repair_tiers(runtime.store, name, state)
        promoter = Promoter(runtime.store, runtime.now, runtime.command)
        if args.rollback:
            event = promoter.rollback(name, state, reason)
        else:
            build = fast_track_plan(name, state).build
            assert build is not None  # noqa: S101  # fast_track_plan raises otherwise
            event = promoter.promote(name, state, build, reason)
        log.info(
            "%s: %s %s -> %s",
            name,
            event.kind.value,
            event.from_version or "-",
            event.to_version,
        )
        report.events.append(event)
        runtime.save(base, work, _message(report.events), report)
        drop_old_builds(runtime.store, work)
    runtime.publish(report)
    return 1 if report.failed else 0


def _print_single_plan(
    manifest: Manifest, name: str, args: argparse.Namespace, catalog: dict[str, App]
) -> int:
    state = _state(manifest, name, catalog)
    if args.rollback:
        if state.previous is None or state.live is None:
            raise PromotionError(
                f"{name}: there is no previous build to roll back to; nothing changed"
            )
        print(  # noqa: T201  # the plan is the command's output
            f"would roll back {name}: live {state.live.version} -> {state.previous.version}, "
            f"previous {state.previous.version} -> {state.live.version}"
        )
        return 0
    build = fast_track_plan(name, state).build
    assert build is not None  # noqa: S101
    print(f"would fast-track {name}: live {version_of(state.live)} -> {build.version}")  # noqa: T201
    return 0


def _hold_or_release(
    runtime: Runtime, catalog: dict[str, App], args: argparse.Namespace
) -> int:
    name = args.hold or args.release
    if args.dry_run:
        state = _state(runtime.load(), name, catalog)
        if args.release and state.hold is None:
            raise PromotionError(f"{name}: is not on hold; nothing to release")
        print(f"would {'hold' if args.hold else 'release'} {name}")  # noqa: T201
        return 0
    with runtime.writing() as (base, work):
        state = _state(work, name, catalog)
        promoter = Promoter(runtime.store, runtime.now, runtime.command)
        if args.hold:
            promoter.hold(name, state, clean_reason(args.reason))
        else:
            promoter.release(name, state, clean_reason(args.reason) or "released")
        report = Report()
        runtime.save(base, work, f"{'Hold' if args.hold else 'Release'} {name}", report)
    log.info("%s: %s", name, "on hold" if args.hold else "released")
    return 1 if report.failed else 0


def _state(manifest: Manifest, name: str, catalog: dict[str, App]) -> AppState:
    state = manifest.apps.get(name)
    if state is None and name not in catalog:
        known = ", ".join(sorted(set(catalog) | set(manifest.apps)))
        raise SettingsError(f"unknown app {name}: known apps are {known}")
    if state is None:
        raise PromotionError(
            f"{name}: no recorded state; run check_updates.py first; nothing changed"
        )
    return state


def _verify(runtime: Runtime, *, deep: bool) -> int:
    report = audit(runtime.store, runtime.load(), deep=deep)
    for problem in report.problems:
        log.error("%s", problem)
    for orphan in report.orphans:
        log.warning("not named by the manifest: %s", orphan)
    log.info(
        "verified %d blobs in %s (%s): %d problem(s), %d unnamed",
        report.checked,
        runtime.store.description,
        "metadata and bytes hashed" if deep else "metadata",
        len(report.problems),
        len(report.orphans),
    )
    if not report.ok:
        log.info(
            "to repair: run check_updates.py and promote.py, which put aliases back "
            "from builds/; a build blob that is missing or differs must be deleted "
            "so that the next check downloads it again"
        )
    return 0 if report.ok else 1


def _message(events: list[Event]) -> str:
    moved = [e for e in events if e.kind in {EventKind.PROMOTED, EventKind.ROLLED_BACK}]
    if not moved:
        return "Record promotion state"
    parts = [
        f"{e.kind.value} {e.app} {e.from_version or '-'} -> {e.to_version}"
        for e in moved
    ]
    return "; ".join(parts).capitalize()


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
