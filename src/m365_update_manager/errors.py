"""The product's exception tree: one base class, one subclass per subsystem.

Every message names the app, URL, blob or file involved and what to do next.
Library exceptions are wrapped at the module boundary with ``raise ... from exc``.
"""


class M365Error(Exception):
    """Base class of every error the product reports to its user."""

    exit_code = 1


class SettingsError(M365Error):
    """A setting, the app catalog or a command-line argument is missing or malformed."""

    exit_code = 2


class ManifestError(M365Error):
    """``manifest.json`` cannot be trusted: broken, unknown schema or unsafe names."""

    exit_code = 2


class FeedError(M365Error):
    """A Microsoft AutoUpdate feed could not be fetched or does not make sense."""


class URLPolicyError(FeedError):
    """A URL or redirect points outside ``M365_ALLOWED_HOSTS`` or uses plain http."""


class DownloadError(M365Error):
    """A package download failed, was short, too long, or did not verify."""


class StorageError(M365Error):
    """Blob storage (Azure, Azurite or the local folder store) refused or failed."""


class LockError(StorageError):
    """Another writer holds the store's lock longer than this run may wait."""


class PromotionError(M365Error):
    """A promotion, rollback, hold or release cannot be carried out as asked."""


class GitHubError(M365Error):
    """GitHub refused or failed a commit of ``manifest.json`` or a notification."""
