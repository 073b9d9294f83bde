"""castbook keeps AI-generated characters consistent.

Importing this package is cheap on purpose: it pulls in no database, imaging or
machine-learning libraries. Import the subpackage you need
(``castbook.library``, ``castbook.images`` …).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
