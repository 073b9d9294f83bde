"""What the Character Extractor proposes: the library's fields, plus where they came from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from castbook.library.models import PHYSICAL_TRAITS

__all__ = ["EXTRACTION_JSON_SCHEMA", "UNKNOWN", "Extraction", "PhysicalGuess"]

UNKNOWN = "unknown"


class PhysicalGuess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hair: str = UNKNOWN
    eyes: str = UNKNOWN
    face: str = UNKNOWN
    body: str = UNKNOWN
    skin: str = UNKNOWN


class Extraction(BaseModel):
    """Proposed character fields. Anything not determinable is "unknown" or an empty list.

    ``source`` says which analyser produced it ("vlm:<provider>/<model>" or "local");
    ``unfilled`` lists the fields it could not determine, so a reviewer sees the gaps;
    ``note`` is the analyser's own account of what it did (the local analyser's measurements),
    shown to the reviewer and never saved into the character.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = UNKNOWN
    physical: PhysicalGuess = Field(default_factory=PhysicalGuess)
    clothing: str = UNKNOWN
    accessories: list[str] = Field(default_factory=list)
    distinctive_features: list[str] = Field(default_factory=list)
    style_prompt: str = ""
    source: str = ""
    unfilled: list[str] = Field(default_factory=list)
    note: str = ""

    def character_fields(self, name: str) -> dict[str, Any]:
        """The flat fields `CharacterLibrary.create` takes; "unknown" becomes empty."""

        def known(value: str) -> str:
            return "" if value.strip().lower() == UNKNOWN else value.strip()

        return {
            "name": name,
            "style_prompt": self.style_prompt,
            "description": known(self.description),
            **{trait: known(getattr(self.physical, trait)) for trait in PHYSICAL_TRAITS},
            "clothing": known(self.clothing),
            "accessories": list(self.accessories),
            "distinctive_features": list(self.distinctive_features),
        }


# The JSON schema a vision-language model is asked to answer with (response_format).
EXTRACTION_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "description",
        "physical",
        "clothing",
        "accessories",
        "distinctive_features",
        "style_prompt",
    ],
    "properties": {
        "description": {"type": "string"},
        "physical": {
            "type": "object",
            "additionalProperties": False,
            "required": list(PHYSICAL_TRAITS),
            "properties": {key: {"type": "string"} for key in PHYSICAL_TRAITS},
        },
        "clothing": {"type": "string"},
        "accessories": {"type": "array", "items": {"type": "string"}},
        "distinctive_features": {"type": "array", "items": {"type": "string"}},
        "style_prompt": {"type": "string"},
    },
}
