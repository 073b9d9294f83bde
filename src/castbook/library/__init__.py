"""The character library: characters, reference images, export/import, prompt injection."""

from castbook.library.exchange import (
    ExportFormat,
    export_characters,
    export_to_file,
    import_document,
    import_file,
)
from castbook.library.injection import InjectedPrompt, character_phrases, inject_characters
from castbook.library.models import (
    Character,
    CharacterFields,
    CharacterLora,
    PhysicalTraits,
    ReferenceImage,
    clean_fields,
)
from castbook.library.service import CharacterLibrary, ImageInput, NewCharacter
from castbook.library.transfer import ImportReport

__all__ = [
    "Character",
    "CharacterFields",
    "CharacterLibrary",
    "CharacterLora",
    "ExportFormat",
    "ImageInput",
    "ImportReport",
    "InjectedPrompt",
    "NewCharacter",
    "PhysicalTraits",
    "ReferenceImage",
    "character_phrases",
    "clean_fields",
    "export_characters",
    "export_to_file",
    "import_document",
    "import_file",
    "inject_characters",
]
