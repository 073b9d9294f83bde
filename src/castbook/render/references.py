"""A character's reference features for scoring, computed once and kept in the library."""

from __future__ import annotations

from castbook.errors import InvalidInputError
from castbook.evaluation import ImageFeatures, Scorer
from castbook.library import Character, CharacterLibrary

__all__ = ["character_reference_features"]


def character_reference_features(
    library: CharacterLibrary, scorer: Scorer, character: Character
) -> list[ImageFeatures]:
    """Features of every reference image; stored ones are reused, new ones stored."""
    if not character.images:
        raise InvalidInputError(f"{character.name} has no reference images to score against")
    features = []
    for image in character.images:
        stored = library.stored_features(image, scorer.key)
        if stored is not None:
            features.append(ImageFeatures.from_json(stored))
            continue
        computed = scorer.features(library.image_bytes(image), f"{character.name} reference")
        library.store_features(image, scorer.key, computed.to_json())
        features.append(computed)
    return features
