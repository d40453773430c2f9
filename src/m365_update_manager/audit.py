"""Checking the whole store against ``manifest.json``: ``promote.py --verify``."""

import hashlib
from dataclasses import dataclass, field

from m365_update_manager.manifest import Manifest
from m365_update_manager.storage import TIERS, BlobStore, tier_blob

MANAGED_PREFIXES = ("builds/", *(f"{tier}/" for tier in TIERS))


@dataclass
class AuditReport:
    """Problems with blobs the manifest names, and blobs nothing names."""

    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        """True when every named blob exists and matches."""
        return not self.problems


def audit(store: BlobStore, manifest: Manifest, *, deep: bool) -> AuditReport:
    """Check that every blob the manifest names exists and matches its record.

    With ``deep`` each blob's bytes are hashed and compared with the recorded SHA-256.
    """
    report = AuditReport()
    named = set()
    for app, state in sorted(manifest.apps.items()):
        expected = {b.blob: (b.version, b.sha256, b.size or None) for b in state.builds}
        for tier in TIERS:
            entry = getattr(state, tier)
            if entry is not None:
                expected[tier_blob(tier, app)] = (entry.version, entry.sha256, None)
        for name, (version, sha256, size) in sorted(expected.items()):
            named.add(name)
            _check(store, report, name, version, sha256, size, deep)
    for prefix in MANAGED_PREFIXES:
        report.orphans += [i.name for i in store.list(prefix) if i.name not in named]
    return report


def _check(
    store: BlobStore,
    report: AuditReport,
    name: str,
    version: str,
    sha256: str,
    size: int | None,
    deep: bool,
) -> None:
    report.checked += 1
    info = store.info(name)
    if info is None:
        report.problems.append(f"{name}: missing (should hold {version})")
        return
    if not info.holds(version, sha256, size):
        report.problems.append(
            f"{name}: holds version {info.version} sha256 {info.sha256} size {info.size}, "
            f"the manifest records {version} {sha256}"
            + (f" size {size}" if size else "")
        )
        return
    if deep:
        digest = hashlib.sha256()
        for chunk in store.read(name):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            report.problems.append(
                f"{name}: bytes hash to {digest.hexdigest()}, not {sha256}"
            )
