"""The HTTP API: ``create_app(settings)`` builds it; ``castbook serve`` runs it.

Native REST under ``/v1`` (characters, generations, tasks with server-sent events, results,
evaluations) and the face-consistency API users already call (``POST /getImagetoImage``,
``POST /getImage``). Every endpoint but ``/health`` and the docs needs a bearer API key.
"""

from castbook.api.app import create_app
from castbook.api.auth import ApiKey, ApiKeys
from castbook.api.config import ApiConfig

__all__ = ["ApiConfig", "ApiKey", "ApiKeys", "create_app"]
