"""Logging set-up: one configuration per process and redaction of secrets."""

import logging
import re
import sys
from collections.abc import Iterable

_SAS_SIGNATURE = re.compile(r"(?i)\b(sig|accountkey|sharedaccesssignature)=[^&;\s\"']+")
_BEARER = re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{8,}")

_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so that every later log line and error masks them."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets, SAS signatures and bearer tokens masked."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _SAS_SIGNATURE.sub(lambda m: f"{m.group(1)}=***", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


class RedactingFilter(logging.Filter):
    """Mask secrets in the fully formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drop a record."""
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(verbosity: int) -> None:
    """Log to stderr: INFO by default, DEBUG with ``-v``, library DEBUG with ``-vv``."""
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = logging.DEBUG if verbosity >= 2 else logging.WARNING
    for noisy in ("azure", "urllib3", "github"):
        logging.getLogger(noisy).setLevel(quiet)
    # stamina's own WARNING names no URL; the product logs each retry itself.
    logging.getLogger("stamina").setLevel(logging.ERROR)
