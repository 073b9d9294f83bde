"""Prompt injection: what a diffusion model is sent for one or more characters."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castbook.errors import FieldError
from castbook.library.injection import (
    InjectedPrompt,
    character_phrases,
    inject_characters,
    split_phrases,
)
from castbook.library.models import Character, CharacterFields, PhysicalTraits


def make(name: str = "Alice", **fields: object) -> CharacterFields:
    physical = {k: fields.pop(k) for k in ("hair", "eyes", "face", "body", "skin") if k in fields}
    return CharacterFields(name=name, physical=PhysicalTraits(**physical), **fields)


ALICE = make(style_prompt="long black hair, blue eyes, white shirt, silver necklace")


# --- the realistic example and order -------------------------------------------------------


def test_realistic_example_exact_output() -> None:
    result = inject_characters("at a cafe, morning light", [ALICE])
    assert result == InjectedPrompt(
        prompt="long black hair, blue eyes, white shirt, silver necklace, at a cafe, morning light",
        negative_prompt="",
    )


def test_phrase_order_is_style_then_traits_in_fixed_order() -> None:
    character = make(
        style_prompt="anime style; cel shading\nsoft colours. Watercolor",
        hair="short red",
        eyes="green",
        face="freckles",
        body="slim build",
        skin="tan",
        clothing="yellow raincoat",
        accessories=("round glasses", "red scarf"),
        distinctive_features=("scar over left eye", "pointed ears"),
    )
    expected = [
        "anime style",
        "cel shading",
        "soft colours",
        "Watercolor",
        "short red hair",
        "green eyes",
        "freckles",
        "slim build",
        "tan skin",
        "yellow raincoat",
        "round glasses",
        "red scarf",
        "scar over left eye",
        "pointed ears",
    ]
    assert character_phrases(character) == expected
    assert inject_characters("in the rain", [character]).prompt == ", ".join(
        [*expected, "in the rain"]
    )


def test_description_and_tags_are_not_injected() -> None:
    character = make(
        style_prompt="red cap",
        description="A cheerful courier who loves the city.",
        tags=("hero", "courier"),
    )
    assert inject_characters("street", [character]).prompt == "red cap, street"


def test_full_character_model_works_too() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    character = Character(
        id="c1",
        name="Alice",
        style_prompt="red cap",
        created_at=now,
        updated_at=now,
    )
    assert inject_characters("street", [character]).prompt == "red cap, street"


# --- dedupe against the user's prompt ----------------------------------------------------


def test_phrase_already_in_prompt_is_not_repeated() -> None:
    result = inject_characters("blue eyes, at a cafe", [ALICE])
    assert result.prompt == "long black hair, white shirt, silver necklace, blue eyes, at a cafe"


@pytest.mark.parametrize(
    "prompt",
    [
        "BLUE EYES, at a cafe",
        "Blue   Eyes , at a cafe",
        "a girl with blue\neyes at a cafe",
        "(blue eyes:1.2), at a cafe",
        "at a cafe, blue eyes.",
    ],
)
def test_dedupe_ignores_case_spacing_and_punctuation(prompt: str) -> None:
    tidied = inject_characters(prompt, []).prompt
    assert inject_characters(prompt, [ALICE]).prompt == (
        f"long black hair, white shirt, silver necklace, {tidied}"
    )


@pytest.mark.parametrize(
    ("prompt", "phrase"),
    [
        ("under a blue sky", "blue eyes"),
        ("a shirt shop", "white shirt"),
        ("red capybara", "red cap"),
        ("silver necklaces for sale", "silver necklace"),
        ("eyes closed", "blue eyes"),
    ],
)
def test_sharing_words_with_the_prompt_is_not_a_duplicate(prompt: str, phrase: str) -> None:
    character = make(style_prompt=phrase)
    assert inject_characters(prompt, [character]).prompt == f"{phrase}, {prompt}"


def test_longer_prompt_phrase_does_not_hide_a_longer_trait() -> None:
    # The prompt says "black hair"; the character's "long black hair" says more, so it stays.
    character = make(style_prompt="long black hair")
    assert inject_characters("black hair", [character]).prompt == "long black hair, black hair"


# --- dedupe within a character ------------------------------------------------------------


def test_repeated_phrase_is_injected_once() -> None:
    character = make(style_prompt="blue eyes, Blue Eyes", eyes="blue", clothing="blue eyes")
    assert character_phrases(character) == ["blue eyes"]


def test_phrase_contained_in_earlier_phrase_is_skipped() -> None:
    character = make(style_prompt="long black hair", hair="black hair", eyes="blue")
    assert character_phrases(character) == ["long black hair", "blue eyes"]
    assert inject_characters("", [character]).prompt == "long black hair, blue eyes"


def test_contained_means_whole_words() -> None:
    character = make(style_prompt="red capybara plush", accessories=("red cap",))
    assert character_phrases(character) == ["red capybara plush", "red cap"]


# --- noun suffixing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trait", "value", "phrase"),
    [
        ("hair", "long black", "long black hair"),
        ("eyes", "blue", "blue eyes"),
        ("skin", "pale", "pale skin"),
        ("hair", "Long Black Hair", "Long Black Hair"),
        ("hair", "black hair in a bun", "black hair in a bun"),
        ("hair", "messy hairstyle", "messy hairstyle"),
        ("eyes", "blue eyes with gold rings", "blue eyes with gold rings"),
        ("eyes", "one EYE closed", "one EYE closed"),
        ("eyes", "Blue-eyed", "Blue-eyed"),
        ("skin", "dark-skinned", "dark-skinned"),
        ("eyes", "  blue.  ", "blue eyes"),
        ("hair", "黑色长发", "黑色长发"),
        ("face", "round", "round"),
        ("body", "tall", "tall"),
    ],
)
def test_noun_added_only_when_missing(trait: str, value: str, phrase: str) -> None:
    assert character_phrases(make(**{trait: value})) == [phrase]


def test_noun_is_a_word_not_a_substring() -> None:
    # "chair" contains "hair" but does not name it.
    assert character_phrases(make(hair="chair-shaped")) == ["chair-shaped hair"]


def test_clothing_accessories_and_features_are_used_as_written() -> None:
    character = make(clothing="green", accessories=("gold",), distinctive_features=("tall",))
    assert character_phrases(character) == ["green", "gold", "tall"]


# --- several characters ---------------------------------------------------------------------


BOB = make("Bob", clothing="red cap", accessories=("green jacket",))


def test_multiple_characters_are_named_in_order() -> None:
    alice = make(hair="long black", eyes="blue")
    assert (
        inject_characters("in a park", [alice, BOB]).prompt
        == "Alice (long black hair, blue eyes), Bob (red cap, green jacket), in a park"
    )
    assert (
        inject_characters("in a park", [BOB, alice]).prompt
        == "Bob (red cap, green jacket), Alice (long black hair, blue eyes), in a park"
    )


def test_single_character_is_not_named() -> None:
    assert "Alice" not in inject_characters("in a park", [ALICE]).prompt


def test_characters_may_share_phrases_but_not_with_the_prompt() -> None:
    alice = make(eyes="blue", clothing="white shirt")
    carol = make("Carol", eyes="blue", clothing="jeans")
    result = inject_characters("white shirt", [alice, carol])
    assert result.prompt == "Alice (blue eyes), Carol (blue eyes, jeans), white shirt"


def test_same_character_twice_is_included_once() -> None:
    assert inject_characters("x", [ALICE, ALICE]) == inject_characters("x", [ALICE])
    again = make("  ALICE ", style_prompt="something else")
    assert (
        inject_characters("x", [ALICE, BOB, again]).prompt
        == "Alice (long black hair, blue eyes, white shirt, silver necklace), "
        "Bob (red cap, green jacket), x"
    )


def test_character_with_no_phrases_is_still_named() -> None:
    empty = make("Dora")
    assert inject_characters("x", [empty, BOB]).prompt == "Dora, Bob (red cap, green jacket), x"
    covered = make("Eve", style_prompt="x")
    assert inject_characters("x", [covered, BOB]).prompt == "Eve, Bob (red cap, green jacket), x"


def test_blank_name_in_a_scene_is_a_field_error() -> None:
    with pytest.raises(FieldError):
        inject_characters("x", [make("  "), BOB])


# --- empty inputs and tidying ---------------------------------------------------------------


def test_empty_prompt_gives_just_the_phrases() -> None:
    assert (
        inject_characters("", [ALICE]).prompt
        == "long black hair, blue eyes, white shirt, silver necklace"
    )
    assert inject_characters(" ,  , ", [ALICE]).prompt.endswith("silver necklace")


def test_empty_character_gives_the_prompt() -> None:
    assert inject_characters("at a cafe", [make()]) == InjectedPrompt("at a cafe", "")


def test_no_characters_and_no_prompt() -> None:
    assert inject_characters("", []) == InjectedPrompt("", "")
    assert inject_characters(" a ,, b ", [], " c ,") == InjectedPrompt("a, b", "c")


def test_whitespace_and_commas_are_tidied() -> None:
    character = make(style_prompt=" ,long   black hair,, ,blue eyes ,", clothing=" a ,, b ")
    result = inject_characters(" ,at a  cafe ,\n, morning light,  ", [character], " ,, lowres ,")
    assert result.prompt == "long black hair, blue eyes, a, b, at a cafe, morning light"
    assert result.negative_prompt == "lowres"


def test_commas_inside_weight_brackets_do_not_split() -> None:
    assert split_phrases("(red scarf, blue hat:1.2), smiling. Calm") == [
        "(red scarf, blue hat:1.2)",
        "smiling",
        "Calm",
    ]
    assert split_phrases("(unclosed, bracket") == ["(unclosed", "bracket"]


def test_a_single_character_not_in_a_list_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        inject_characters("x", ALICE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        inject_characters("x", ["Alice"])  # type: ignore[list-item]


# --- negative prompt ------------------------------------------------------------------------


def test_negative_prompt_is_user_then_characters_deduplicated() -> None:
    alice = make(negative_prompt="blurry, Extra Fingers; hat")
    bob = make("Bob", negative_prompt="extra fingers, lowres, HAT")
    result = inject_characters("park", [alice, bob], "lowres, bad hands")
    assert result.negative_prompt == "lowres, bad hands, blurry, Extra Fingers, hat"


def test_negative_phrase_contained_in_user_negative_is_skipped() -> None:
    alice = make(negative_prompt="blurry, hands")
    result = inject_characters("park", [alice], "blurry background, bad hands")
    assert result.negative_prompt == "blurry background, bad hands"


def test_character_negative_that_the_prompt_asks_for_is_dropped() -> None:
    alice = make(negative_prompt="hat, glasses, blurry")
    result = inject_characters("wearing a red hat, park", [alice])
    assert result.negative_prompt == "glasses, blurry"
    # Another character's phrase counts as asked for too.
    bob = make("Bob", accessories=("round glasses",))
    result = inject_characters("park", [alice, bob])
    assert result.negative_prompt == "hat, blurry"


def test_negative_conflict_needs_whole_words() -> None:
    alice = make(negative_prompt="cap")
    assert inject_characters("red capybara", [alice]).negative_prompt == "cap"


def test_user_negative_is_kept_as_written_even_when_prompt_asks_for_it() -> None:
    result = inject_characters("red hat", [make(style_prompt="smiling")], "Red  Hat, blurry")
    assert result.negative_prompt == "Red Hat, blurry"


def test_user_negative_vetoes_an_identical_character_phrase() -> None:
    alice = make(accessories=("glasses",), clothing="red coat")
    result = inject_characters("park", [alice], "Glasses")
    assert result.prompt == "red coat, park"
    assert result.negative_prompt == "Glasses"


# --- Unicode --------------------------------------------------------------------------------


def test_chinese_text_splits_on_full_width_punctuation() -> None:
    hero = make("主角", style_prompt="黑色长发，蓝色眼睛。白衬衫；银项链、微笑")
    assert character_phrases(hero) == ["黑色长发", "蓝色眼睛", "白衬衫", "银项链", "微笑"]


def test_chinese_dedupe_without_spaces() -> None:
    hero = make("主角", style_prompt="黑色长发，蓝色眼睛", hair="黑色长发", clothing="白衬衫")
    result = inject_characters("黑色长发的女孩在咖啡馆", [hero])
    assert result.prompt == "蓝色眼睛, 白衬衫, 黑色长发的女孩在咖啡馆"


def test_chinese_names_in_a_scene() -> None:
    hero = make("主角", style_prompt="黑色长发")
    friend = make("朋友", clothing="红色外套", negative_prompt="黑色长发, 模糊")
    result = inject_characters("咖啡馆", [hero, friend], "低质量")
    assert result.prompt == "主角 (黑色长发), 朋友 (红色外套), 咖啡馆"
    assert result.negative_prompt == "低质量, 模糊"


def test_full_width_letters_compare_equal() -> None:
    character = make(style_prompt="ＢＬＵＥ eyes")
    assert inject_characters("blue eyes", [character]).prompt == "blue eyes"


# --- determinism and properties -------------------------------------------------------------


def test_same_input_same_output() -> None:
    cast = [ALICE, BOB, make("Carol", hair="red", negative_prompt="hat")]
    first = inject_characters("park, noon", cast, "lowres")
    for _ in range(5):
        assert inject_characters("park, noon", list(cast), "lowres") == first


WORDS = ["red", "blue", "long", "black", "hair", "eyes", "cap", "hat", "a", "主角", "黑色"]
phrase_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
prompt_text = st.lists(phrase_text, max_size=5).map(", ".join)
messy_text = st.text(alphabet="ab ,.;\n()，。", max_size=20)
characters = st.builds(
    make,
    name=st.sampled_from(["Alice", "Bob", "Carol", "alice"]),
    style_prompt=st.one_of(prompt_text, messy_text),
    negative_prompt=prompt_text,
    hair=st.one_of(phrase_text, messy_text),
    eyes=phrase_text,
    clothing=messy_text,
    accessories=st.lists(phrase_text, max_size=2).map(tuple),
)


def _norm(text: str) -> str:
    """Casefolded, single-spaced, without punctuation at either end."""
    return " ".join(text.casefold().split()).strip(string.punctuation + "，。 ")


def _whole(needle: str, haystack: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


def _is_tidy(text: str) -> bool:
    return (
        text == text.strip(" ,")
        and "  " not in text
        and not re.search(r",\s*,", text)
        and "\n" not in text
    )


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(prompt_text, messy_text),
    st.lists(characters, max_size=3),
    st.one_of(prompt_text, messy_text),
)
def test_output_is_tidy_and_deterministic(
    prompt: str, cast: list[CharacterFields], negative: str
) -> None:
    result = inject_characters(prompt, cast, negative)
    assert _is_tidy(result.prompt)
    assert _is_tidy(result.negative_prompt)
    assert result == inject_characters(prompt, list(cast), negative)


@settings(max_examples=300, deadline=None)
@given(prompt_text, characters)
def test_one_character_every_phrase_present_once_and_reinjection_adds_nothing(
    prompt: str, character: CharacterFields
) -> None:
    result = inject_characters(prompt, [character])
    phrases = character_phrases(character)
    assert len({_norm(p) for p in phrases}) == len(phrases)
    for phrase in phrases:
        assert _norm(phrase) in _norm(result.prompt)
    user = inject_characters(prompt, []).prompt
    assert result.prompt.endswith(user)
    assert inject_characters(result.prompt, [character]).prompt == result.prompt


@settings(max_examples=300, deadline=None)
@given(prompt_text, st.lists(characters, min_size=1, max_size=3))
def test_character_negatives_never_contradict_the_prompt(
    prompt: str, cast: list[CharacterFields]
) -> None:
    result = inject_characters(prompt, cast)
    positive = _norm(result.prompt)
    negatives = [_norm(p) for p in split_phrases(result.negative_prompt)]
    assert len(set(negatives)) == len(negatives)
    for phrase in negatives:
        assert not _whole(phrase, positive)
