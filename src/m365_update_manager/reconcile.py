"""Bringing storage back in line with ``manifest.json`` after an interrupted run."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from m365_update_manager.errors import M365Error, StorageError
from m365_update_manager.feed import version_key
from m365_update_manager.manifest import AppState, Manifest
from m365_update_manager.storage import TIERS, BlobInfo, BlobStore, tier_blob

log = logging.getLogger(__name__)


def repair_tiers(store: BlobStore, app: str, state: AppState) -> list[str]:
    """Point every tier alias at the build the manifest records; return what changed.

    The manifest is the record of intent: an alias that a killed run left pointing
    elsewhere is copied again from the recorded build's immutable blob, and an alias
    the manifest does not know is removed.
    """
    repaired = _restore_builds_from_aliases(store, app, state)
    for tier in TIERS:
        name = tier_blob(tier, app)
        expected = getattr(state, tier)
        found = store.info(name)
        if expected is None:
            if found is not None:
                store.delete(name)
                repaired.append(f"removed {name}, which the manifest does not record")
            continue
        if found is not None and found.holds(expected.version, expected.sha256):
            continue
        build = state.build(expected.version)
        if build is None or not _present(
            store.info(build.blob), build.version, build.sha256
        ):
            raise StorageError(
                f"{name} should hold {expected.version} but its build blob is missing; "
                f"run 'python promote.py --verify' and restore it"
            )
        store.copy(build.blob, name)
        repaired.append(f"pointed {name} back at {expected.version}")
    for line in repaired:
        log.warning("%s: repaired: %s", app, line)
    return repaired


@contextmanager
def restoring(store: BlobStore, app: str, state: AppState) -> Iterator[None]:
    """On a failure inside, point the tiers back at what ``state`` records now.

    For a sequence of copies (a promotion, a rollback) that fails half way: the
    state is not saved, so storage goes back to the recorded state, and the run
    ends with the two in agreement. When storage fails again, the next run's
    ``repair_tiers`` finishes the job.
    """
    recorded = state.model_copy(deep=True)
    try:
        yield
    except M365Error:
        try:
            repair_tiers(store, app, recorded)
        except M365Error as exc:
            log.warning("%s: could not restore the tiers now (%s)", app, exc)
        raise


def _restore_builds_from_aliases(
    store: BlobStore, app: str, state: AppState
) -> list[str]:
    """Fill ``builds/`` from aliases, for a store laid out before builds were kept."""
    restored = []
    for build in state.builds:
        if store.info(build.blob) is not None:
            continue
        for tier in TIERS:
            alias = store.info(tier_blob(tier, app))
            if _present(alias, build.version, build.sha256):
                store.copy(tier_blob(tier, app), build.blob)
                restored.append(f"restored {build.blob} from {tier_blob(tier, app)}")
                break
    return restored


def orphan_builds(store: BlobStore, app: str, state: AppState) -> list[BlobInfo]:
    """Return the blobs under ``builds/<app>/`` that the manifest does not record."""
    known = {build.blob for build in state.builds}
    return [info for info in store.list(f"builds/{app}/") if info.name not in known]


def _present(info: BlobInfo | None, version: str, sha256: str) -> bool:
    return info is not None and info.holds(version, sha256)


def drop_old_builds(store: BlobStore, manifest: Manifest) -> None:
    """Delete build blobs older than previous that the saved state no longer records.

    A newer unrecorded build is a verified download a failed check left behind:
    the next check adopts it instead of downloading it again.
    """
    for name, state in manifest.apps.items():
        floor = state.previous or state.live
        if floor is None:
            continue
        for orphan in orphan_builds(store, name, state):
            if _older_than(orphan.name, floor.version):
                log.info("%s: removing %s, older than previous", name, orphan.name)
                store.delete(orphan.name)


def _older_than(blob: str, version: str) -> bool:
    """Tell from a ``builds/<app>/<version>/<file>`` name whether it is older."""
    parts = blob.split("/")
    try:
        return len(parts) == 4 and version_key(parts[2]) < version_key(version)
    except ValueError:
        return False
