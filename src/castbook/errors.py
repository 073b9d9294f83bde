"""Every error castbook raises on purpose.

Users catch :class:`CastbookError`; its message is one line that says what was
wrong and what to do about it, fit to print as-is in a CLI or an API answer.

::

    CastbookError
    ├── InvalidInputError            the user gave us something we cannot use
    │   ├── ImageError               not a usable image
    │   │   ├── UnsupportedImageError    not PNG / JPEG / WebP, or not an image at all
    │   │   ├── CorruptImageError        truncated or undecodable data
    │   │   └── ImageTooLargeError       over the byte or pixel limits, or zero-sized
    │   ├── FieldError               a field is out of range or malformed (names the field)
    │   └── ImportFormatError        an export file that cannot be read as a whole
    ├── NotFoundError                a named thing does not exist
    │   └── CharacterNotFoundError
    ├── ConflictError                the change clashes with what is stored
    │   └── DuplicateNameError
    ├── StorageError                 the database or blob store failed underneath us
    ├── MissingDependencyError       an optional extra is not installed (names the extra)
    ├── ModelDownloadError           the model hub refused, or a downloaded file does not
    │   │                            match what the hub reported
    │   └── HubUnreachableError      the model hub could not be reached at all
    └── GenerationError              a generation did not produce its images
        ├── GenerationCancelled      the user (or a job) cancelled it between steps
        ├── ModelNotAvailableError   a preset's model is not on this machine and cannot be fetched
        └── BackendError             a remote backend refused or failed (status and message)
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CastbookError",
    "CharacterNotFoundError",
    "ConflictError",
    "CorruptImageError",
    "DuplicateNameError",
    "FieldError",
    "GenerationCancelled",
    "GenerationError",
    "HubUnreachableError",
    "ImageError",
    "ImageTooLargeError",
    "ImportFormatError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelDownloadError",
    "ModelNotAvailableError",
    "NotFoundError",
    "StorageError",
    "UnsupportedImageError",
]


class CastbookError(Exception):
    """Base of every error castbook raises deliberately."""


class InvalidInputError(CastbookError, ValueError):
    """The caller gave us input we cannot use."""


class ImageError(InvalidInputError):
    """An image could not be accepted."""


class UnsupportedImageError(ImageError):
    """The data is not an image in a format we accept."""


class CorruptImageError(ImageError):
    """The image is truncated or cannot be decoded."""


class ImageTooLargeError(ImageError):
    """The image is over a size limit (bytes or pixels), or has no pixels at all."""


class FieldError(InvalidInputError):
    """A named field has a bad value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ImportFormatError(InvalidInputError):
    """An import file cannot be read at all (not JSON, unknown format, wrong shape)."""


class NotFoundError(CastbookError, LookupError):
    """A named thing does not exist."""


class CharacterNotFoundError(NotFoundError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"no character named {name!r}; `castbook character list` shows the library"
        )


class ConflictError(CastbookError):
    """The change clashes with what is already stored."""


class DuplicateNameError(ConflictError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"a character named {name!r} already exists (names are unique, ignoring case); "
            "pick another name or edit the existing character"
        )


class StorageError(CastbookError):
    """The database or blob store failed underneath us."""


class MissingDependencyError(CastbookError, ImportError):
    """An optional part of castbook needs an extra that is not installed."""

    def __init__(self, feature: str, extra: str, missing: str | None = None) -> None:
        self.extra = extra
        detail = f" ({missing} is missing)" if missing else ""
        super().__init__(
            f"{feature} needs the {extra!r} extra{detail}: pip install 'castbook[{extra}]'"
        )


class ModelDownloadError(CastbookError):
    """A model download failed: the hub refused (gated, not found), could not be reached,
    or a file did not match the size or hash the hub reported."""


class HubUnreachableError(ModelDownloadError):
    """The model hub (``HF_ENDPOINT``) could not be reached: no network, or a wrong address."""


class GenerationError(CastbookError):
    """A generation did not produce its images."""


class GenerationCancelled(GenerationError):
    """Cancelled between steps; nothing was produced."""


class ModelNotAvailableError(GenerationError):
    """The model a preset names is neither on this machine nor downloadable."""


class BackendError(GenerationError):
    """A remote backend answered with an error, or did not answer in time."""

    def __init__(self, backend: str, message: str, *, status: int | None = None) -> None:
        self.backend = backend
        self.status = status
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{backend}{where}: {message}")
