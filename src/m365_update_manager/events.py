"""Events a person should hear about, collected during a run and published at its end."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    """What happened to an app's build."""

    STAGED = "staged"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"
    HELD = "held-back"
    FAILED = "failed"


@dataclass(frozen=True)
class Event:
    """One thing that happened to one app in one run; text fields are already redacted."""

    kind: EventKind
    app: str
    from_version: str | None
    to_version: str | None
    when: datetime
    location: str
    detail: str = ""
