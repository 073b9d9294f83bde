"""Character Extractor: propose a character's fields from an image.

A vision-language model behind any OpenAI-compatible chat-completions endpoint does the
reading when one is configured ($CASTBOOK_HOME/providers.toml, or CASTBOOK_EXTRACT_BASE_URL,
CASTBOOK_EXTRACT_MODEL and CASTBOOK_EXTRACT_API_KEY); otherwise a local analyser measures
what it honestly can (hair, skin and clothing colours around a detected face). The user
reviews the proposal before it is saved.
"""

from castbook.extract.extractor import Extractor
from castbook.extract.schema import UNKNOWN, Extraction, PhysicalGuess

__all__ = ["UNKNOWN", "Extraction", "Extractor", "PhysicalGuess"]
