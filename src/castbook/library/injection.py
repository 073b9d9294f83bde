"""Prompt injection: put characters into a text-to-image prompt, once, in a stable order.

This is a pure function of its inputs. Generation code calls :func:`inject_characters`
just before sending a prompt to a diffusion model.

What the model gets
-------------------
* **Character first.** CLIP-based text encoders read only the first 77 tokens, so the
  character's look goes before the user's prompt.
* **Short comma-separated phrases.** The style prompt is split into phrases; each trait
  is one phrase. The prose ``description`` and the ``tags`` are never injected.
* **Each thing said once.** A phrase is skipped when the user's prompt already says it
  (as a whole-word sub-phrase, ignoring case and spacing), when it was already injected,
  or when it is part of a phrase already injected ("black hair" after "long black hair").
* **One character is not named** (a name is just noise to the model); several characters
  are named, each followed by its phrases in parentheses, so the model can tell them apart.
* **No placeholders.** A value that only says "not known" — ``unknown``, ``n/a``, ``none``
  and the others in :data:`PLACEHOLDERS`, in any case, or nothing but punctuation such as
  ``-`` or ``?`` — is never injected, in either prompt (see :func:`is_placeholder`). Such
  values come from other tools (an nbp export, a vision model's "unknown").
* **Never draw and avoid the same thing.** A character's negative phrase that the final
  prompt asks for is dropped; a character phrase the user's negative prompt names exactly
  is not injected. The user's own text is never dropped, only tidied.

Phrase order for one character: style prompt phrases, then hair, eyes, face, body, skin,
clothing, each accessory, each distinctive feature (see :func:`character_phrases`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from castbook.library.models import PHYSICAL_TRAITS, CharacterFields, normalize_name

__all__ = [
    "PLACEHOLDERS",
    "InjectedPrompt",
    "character_phrases",
    "inject_characters",
    "is_placeholder",
    "split_phrases",
]

# Values that stand for "not known" rather than describe anything, compared ignoring case,
# spacing and punctuation at either end ("N/A.", " Unknown "). A value that is empty once
# that punctuation is gone ("-", "?", "—", "...") is a placeholder too.
PLACEHOLDERS = frozenset(
    {
        "unknown",
        "n/a",
        "na",
        "none",
        "null",
        "nil",
        "undefined",
        "unspecified",
        "not specified",
        "not applicable",
        "not visible",
        "tbd",
        "未知",
        "不明",
        "无",
        "無",
    }
)

# Characters that separate phrases anywhere in a style or negative prompt.
_SEPARATORS = frozenset(",;\n\r，；、。！？")
# Characters that end a sentence only when followed by whitespace or the end of text,
# so "1.2" in "(blue eyes:1.2)" and "e.g" stay intact.
_SENTENCE_ENDS = frozenset(".!?")
# Brackets hold prompt-weight syntax such as "(red scarf, blue hat:1.2)"; we do not
# split inside them.
_OPENERS = frozenset("([{（【")
_CLOSERS = frozenset(")]}）】")
# Stripped from both ends of every phrase we output.
_EDGE_JUNK = " \t\n\r\f\v,;，；、。.!?！？"

# Trait -> (noun appended when missing, pattern that finds the noun already there).
# The noun is recognised at the start of a word, so "eyes", "blue-eyed", "hairstyle"
# and "dark-skinned" all count as already naming it.
_TRAIT_NOUNS: dict[str, tuple[str, re.Pattern[str]]] = {
    "hair": ("hair", re.compile(r"\bhair", re.IGNORECASE)),
    "eyes": ("eyes", re.compile(r"\beye", re.IGNORECASE)),
    "skin": ("skin", re.compile(r"\bskin", re.IGNORECASE)),
}
_PHYSICAL_ORDER = PHYSICAL_TRAITS

# Scripts written without spaces between words: inside them every character is its own
# word boundary, so "黑色长发" is found inside "黑色长发的女孩".
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x31BF),  # Bopomofo
    (0x31F0, 0x31FF),  # Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)


@dataclass(frozen=True)
class InjectedPrompt:
    """The prompt pair to send to the model."""

    prompt: str
    negative_prompt: str


def split_phrases(text: str) -> list[str]:
    """Split prompt text into clean phrases, in order.

    Splits on commas, semicolons, line breaks, the full-width "，", "；", "、", "。",
    "！", "？", and on ".", "!", "?" followed by whitespace or the end of the text.
    Commas inside brackets (prompt-weight syntax) do not split. Each phrase has its
    whitespace collapsed; empty phrases are dropped. Duplicates are kept.
    """
    phrases, balanced = _split(text, respect_brackets=True)
    if not balanced:  # an unclosed bracket: split everywhere instead
        phrases, _ = _split(text, respect_brackets=False)
    return [p for p in (_clean(p) for p in phrases) if p]


def is_placeholder(text: str) -> bool:
    """Whether ``text`` says nothing about a character: empty, only punctuation, or one of
    :data:`PLACEHOLDERS` ("unknown", "N/A", "none" …), ignoring case and spacing."""
    key = _key(text)
    return not key or key in PLACEHOLDERS


def character_phrases(character: CharacterFields) -> list[str]:
    """The phrases injected for ``character`` into an empty prompt, in order.

    Style prompt phrases, then hair, eyes, face, body, skin, clothing, each accessory,
    each distinctive feature. Hair, eyes and skin get their noun when the value does not
    name it ("blue" -> "blue eyes"). Phrases repeated within the character, or contained
    in an earlier phrase as whole words, are left out.
    """
    _check_character(character)
    return _dedupe(_raw_phrases(character), against="")


def inject_characters(
    prompt: str,
    characters: Sequence[CharacterFields],
    negative_prompt: str = "",
) -> InjectedPrompt:
    """Put ``characters`` into ``prompt`` and merge their negative prompts.

    One character: ``"<phrases>, <prompt>"``. Several: ``"Alice (<phrases>), Bob
    (<phrases>), <prompt>"``, in the order given; a character passed more than once
    (same name, ignoring case) is used once, at its first place. Phrases the user's
    prompt already contains are skipped, per character. The negative prompt is the
    user's, then each character's negative phrases not already present and not asked
    for by the final prompt.

    Raises :class:`TypeError` if ``characters`` is not a sequence of characters, and
    :class:`castbook.errors.FieldError` if a character in a multi-character scene has
    no usable name.
    """
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise TypeError("prompt and negative_prompt must be str")
    if isinstance(characters, CharacterFields | str | bytes):
        raise TypeError("characters must be a sequence of characters; wrap one in a list")
    cast = _unique_characters(characters)

    user_prompt = _tidy(prompt)
    user_negative = _tidy(negative_prompt)
    prompt_key = _key(user_prompt)
    # Exact user-negative phrases: a character phrase equal to one is not injected.
    vetoed = {_key(p) for p in split_phrases(user_negative)}

    parts: list[str] = []
    if len(cast) == 1:
        phrases = _character_phrases_for(cast[0], prompt_key, vetoed)
        parts.extend(phrases)
    else:
        for character in cast:
            name = normalize_name(character.name)
            phrases = _character_phrases_for(character, prompt_key, vetoed)
            parts.append(f"{name} ({', '.join(phrases)})" if phrases else name)
    if user_prompt:
        parts.append(user_prompt)
    final_prompt = ", ".join(parts)

    final_key = _key(final_prompt)
    user_negative_key = _key(user_negative)
    negative_parts = [user_negative] if user_negative else []
    seen_negative: list[str] = []
    for character in cast:
        for phrase in split_phrases(character.negative_prompt):
            key = _key(phrase)
            if is_placeholder(phrase) or _contains(final_key, key):
                continue  # the prompt asks for it: do not also tell the model to avoid it
            if _contains(user_negative_key, key) or _already(seen_negative, key):
                continue
            seen_negative.append(key)
            negative_parts.append(phrase)
    return InjectedPrompt(prompt=final_prompt, negative_prompt=", ".join(negative_parts))


# --- internals -------------------------------------------------------------------------


def _check_character(character: object) -> None:
    if not isinstance(character, CharacterFields):
        raise TypeError(f"expected a Character or CharacterFields, got {type(character).__name__}")


def _unique_characters(characters: Iterable[CharacterFields]) -> list[CharacterFields]:
    unique: list[CharacterFields] = []
    seen: set[str] = set()
    for character in characters:
        _check_character(character)
        identity = _key(character.name)
        if identity in seen:
            continue
        seen.add(identity)
        unique.append(character)
    return unique


def _character_phrases_for(
    character: CharacterFields, prompt_key: str, vetoed: set[str]
) -> list[str]:
    return [
        phrase
        for phrase in _dedupe(_raw_phrases(character), against=prompt_key)
        if _key(phrase) not in vetoed
    ]


def _raw_phrases(character: CharacterFields) -> list[str]:
    phrases = split_phrases(character.style_prompt)
    for trait in _PHYSICAL_ORDER:
        value = _clean(getattr(character.physical, trait))
        if is_placeholder(value):
            continue  # before the noun: "unknown" must not become "unknown hair"
        if trait in _TRAIT_NOUNS:
            noun, present = _TRAIT_NOUNS[trait]
            if not present.search(value) and _is_latin(value):
                value = f"{value} {noun}"
        phrases.append(value)
    phrases.append(_clean(character.clothing))
    phrases.extend(_clean(a) for a in character.accessories)
    phrases.extend(_clean(f) for f in character.distinctive_features)
    return [p for p in phrases if not is_placeholder(p)]


def _dedupe(phrases: Iterable[str], against: str) -> list[str]:
    """Keep phrases not in ``against`` (a key) and not inside an earlier kept phrase."""
    kept: list[str] = []
    kept_keys: list[str] = []
    for phrase in phrases:
        key = _key(phrase)
        if not key or _contains(against, key) or _already(kept_keys, key):
            continue
        kept.append(phrase)
        kept_keys.append(key)
    return kept


def _already(keys: Iterable[str], key: str) -> bool:
    return any(_contains(existing, key) for existing in keys)


def _split(text: str, *, respect_brackets: bool) -> tuple[list[str], bool]:
    """Raw pieces, and whether every bracket opened was closed."""
    phrases: list[str] = []
    current: list[str] = []
    depth = 0
    for i, ch in enumerate(text):
        if respect_brackets and ch in _OPENERS:
            depth += 1
        elif respect_brackets and ch in _CLOSERS:
            depth = max(depth - 1, 0)
        elif depth == 0 and (
            ch in _SEPARATORS
            or (ch in _SENTENCE_ENDS and (i + 1 == len(text) or text[i + 1].isspace()))
        ):
            phrases.append("".join(current))
            current = []
            continue
        current.append(ch)
    phrases.append("".join(current))
    return phrases, depth == 0


def _clean(text: str) -> str:
    """One output phrase: tidied, with no separators or spaces at either end."""
    return _tidy(text).strip(_EDGE_JUNK)


def _tidy(text: str) -> str:
    """The user's text as written, with single spaces and no empty comma segments."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    out: list[str] = []
    for segment, separator in _comma_segments(text):
        segment = segment.strip()
        if not segment:
            continue
        if out:
            out.append(", " if separator == "," else separator)
        out.append(segment)
    return "".join(out)


def _comma_segments(text: str) -> list[tuple[str, str]]:
    """Split on "," and "，"; each segment with the separator before it ("" for the first)."""
    pieces = re.split(r"([,，])", text)
    segments = [(pieces[0], "")]
    for i in range(1, len(pieces), 2):
        segments.append((pieces[i + 1], pieces[i]))
    return segments


def _key(text: str) -> str:
    """Comparison form: NFKC, casefolded, single spaces, no punctuation at either end."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    collapsed = " ".join(folded.split())
    start, end = 0, len(collapsed)
    while start < end and _is_edge_junk(collapsed[start]):
        start += 1
    while end > start and _is_edge_junk(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _is_edge_junk(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def _contains(haystack: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``haystack`` as whole words (both already keys)."""
    if not needle:
        return False
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if _boundary(haystack, start - 1, needle[0]) and _boundary(haystack, end, needle[-1]):
            return True
        start = haystack.find(needle, start + 1)
    return False


def _boundary(haystack: str, index: int, edge: str) -> bool:
    """Whether the needle's ``edge`` character may meet ``haystack[index]`` here."""
    if index < 0 or index >= len(haystack):
        return True
    neighbour = haystack[index]
    return not (_is_word(neighbour) and _is_word(edge)) or (
        _is_unspaced(neighbour) or _is_unspaced(edge)
    )


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


def _is_unspaced(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _UNSPACED_RANGES)


def _is_latin(text: str) -> bool:
    """Whether every letter in ``text`` is Latin script (and there is at least one)."""
    letters = [ch for ch in text if ch.isalpha()]
    return bool(letters) and all("LATIN" in unicodedata.name(ch, "") for ch in letters)
