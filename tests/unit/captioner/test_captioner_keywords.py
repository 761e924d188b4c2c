"""Keyword extraction on captions shaped like BLIP's (the seed's outputs are the fixtures)."""

from __future__ import annotations

import pytest

from deskgen.services.captioner.keywords import (
    Keyword,
    extract_keywords,
    normalise,
    objects_in,
    singularise,
    split_items,
    strip_echo,
)

SEED = [
    ("This is a photo of", "this is a photo of a desk full of computers"),
    ("Q: What objects are on the desk? A:", "q : what objects are on the desk? a : laptop, a keyboard, and a monitor"),
    ("desk_setup:", "desk _ setup : _ with a laptop, monitor, keyboard, mouse, and mouse"),
]


@pytest.mark.parametrize("raw, clean", [
    ("desk _ setup : _ with a laptop", "desk_setup: with a laptop"),
    ("q : what objects are on the desk? a : laptop", "q: what objects are on the desk? a: laptop"),
    ("  This   is A Photo  ", "this is a photo"),
    ("_ _ monitor , keyboard .", "monitor, keyboard."),
])
def test_normalise_undoes_blip_spacing_artefacts(raw, clean):
    assert normalise(raw) == clean


@pytest.mark.parametrize("prompt, caption, rest", [
    SEED[0] + ("a desk full of computers",),
    SEED[1] + ("laptop, a keyboard, and a monitor",),
    SEED[2] + ("with a laptop, monitor, keyboard, mouse, and mouse",),
    ("desk_setup:", "a laptop on a desk", "a laptop on a desk"),  # no echo: kept whole
    ("This is a photo of", "this is a photo", ""),  # only (part of) the echo: nothing said
    ("", "a monitor", "a monitor"),  # unconditional caption
])
def test_strip_echo_removes_the_prompt_blip_decodes_back(prompt, caption, rest):
    assert strip_echo(caption, prompt) == rest


def test_split_items_splits_object_lists_at_commas_and_list_words():
    assert split_items("laptop, a keyboard, and a monitor") == [["laptop"], ["a", "keyboard"], ["a", "monitor"]]
    assert split_items("a monitor with speakers or a lamp") == [["a", "monitor"], ["speakers"], ["a", "lamp"]]


@pytest.mark.parametrize("plural, singular", [
    ("monitors", "monitor"), ("mice", "mouse"), ("boxes", "box"), ("accessories", "accessory"),
    ("glasses", "glasses"), ("headphones", "headphones"), ("shelves", "shelf"), ("lamp", "lamp"),
])
def test_singularise(plural, singular):
    assert singularise(plural) == singular


def test_objects_in_prefers_phrases_maps_aliases_and_drops_non_objects():
    words = "a black computer mouse on a mouse pad beside two screens and mice in a sunny room".split()
    assert objects_in(words) == ["mouse", "mouse pad", "monitor", "mouse"]
    assert objects_in("a wooden desk full of stuff".split()) == []


def test_seed_captions_give_objects_weighted_by_how_many_captions_mention_them():
    assert extract_keywords(SEED) == [
        Keyword("laptop", 2), Keyword("keyboard", 2), Keyword("monitor", 2),
        Keyword("computer", 1), Keyword("mouse", 1),
    ]


def test_a_caption_repeating_an_object_counts_it_once():
    captions = [("desk_setup:", "desk _ setup : _ mouse, mouse, mouse, and mouse"), ("", "a lamp and a mouse")]
    assert extract_keywords(captions) == [Keyword("mouse", 2), Keyword("lamp", 1)]


def test_echoed_prompt_words_never_become_keywords():
    # "desk" and "objects" are in the prompts; a caption that says nothing new yields nothing
    assert extract_keywords([("Q: What objects are on the desk? A:", "q : what objects are on the desk? a :")]) == []


def test_nonsense_from_random_weights_yields_no_keywords():
    captions = [("This is a photo of", "this is a photo of大 stanton burgess householder going random ritual"),
                ("desk_setup:", "desk _ setup :sville blogs performances proponent courts merged")]
    assert extract_keywords(captions) == []
