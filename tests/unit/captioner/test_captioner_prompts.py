"""Prompt building: weighted objects + concept → prompt, negative prompt, preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.services.captioner import prompts
from deskgen.services.captioner.keywords import Keyword
from deskgen.services.captioner.prompts import ConceptBook, build_prompt, concept_book, objects_phrase, weekday_of

SEED_NEGATIVE = ("blurry, low quality, noisy, distorted, deformed, bad proportions, text, watermark, messy, "
                 "cluttered background, cartoon, anime, painting, sketch")
SEED_KEYWORDS = [Keyword("laptop", 2), Keyword("keyboard", 2), Keyword("monitor", 2),
                 Keyword("computer", 1), Keyword("mouse", 1)]
FRIDAY = "2026-11-27T09:30:00Z"


def test_heaviest_objects_lead_and_the_rest_follow():
    assert objects_phrase(SEED_KEYWORDS, 8, "x") == "laptop, keyboard and monitor, plus computer and mouse"
    assert objects_phrase([Keyword("lamp", 1)], 8, "x") == "lamp"
    assert objects_phrase(SEED_KEYWORDS, 2, "x") == "laptop and keyboard"


def test_no_objects_fall_back_to_a_generic_desk():
    plan = build_prompt([], {}, FRIDAY)
    assert concept_book().objects_fallback in plan.prompt


def test_default_concept_is_basic_with_the_seed_negative_prompt():
    plan = build_prompt(SEED_KEYWORDS, {}, FRIDAY)
    assert (plan.concept, plan.preset, plan.theme) == ("BASIC", "basic", None)
    assert plan.prompt.startswith("a high quality photo of a modern desk setup with "
                                  "laptop, keyboard and monitor, plus computer and mouse, ")
    assert plan.negative_prompt == SEED_NEGATIVE


@pytest.mark.parametrize("concept, preset", [
    ("BASIC", "basic"), ("MSPAINT", "mspaint"), ("SIMPLE", "simple"), ("OIL", "oil"),
    ("CARTOON", "cartoon"), ("WEEKDAY", "weekday"),
])
def test_each_concept_maps_to_its_generator_preset(concept, preset):
    plan = build_prompt(SEED_KEYWORDS, {"concept": concept}, FRIDAY)
    assert (plan.concept, plan.preset) == (concept, preset)
    assert "laptop, keyboard and monitor" in plan.prompt


@pytest.mark.parametrize("concept, dropped", [
    ("CARTOON", {"cartoon", "anime"}), ("OIL", {"painting"}), ("MSPAINT", {"cartoon", "painting", "sketch"}),
])
def test_styled_concepts_do_not_negate_their_own_style(concept, dropped):
    terms = build_prompt([], {"concept": concept}, FRIDAY).negative_prompt.split(", ")
    assert not dropped & set(terms)
    assert terms == [t for t in SEED_NEGATIVE.split(", ") if t not in dropped]


def test_request_preset_overrides_the_concepts_preset():
    plan = build_prompt([], {"concept": "OIL", "preset": "ott_3d"}, FRIDAY)
    assert (plan.concept, plan.preset) == ("OIL", "ott_3d")


def test_unknown_concept_is_rejected():
    with pytest.raises(InvalidInputError) as caught:
        build_prompt([], {"concept": "VAPORWAVE"}, FRIDAY)
    assert (caught.value.reason, caught.value.status) == ("unknown_concept", "rejected")


def test_weekday_theme_comes_from_uploaded_at_not_the_clock():
    first = build_prompt(SEED_KEYWORDS, {"concept": "WEEKDAY"}, FRIDAY)
    again = build_prompt(SEED_KEYWORDS, {"concept": "WEEKDAY"}, FRIDAY)
    saturday = build_prompt(SEED_KEYWORDS, {"concept": "WEEKDAY"}, "2026-11-28T09:30:00Z")
    assert first == again
    assert first.theme == "friday" and concept_book().weekday_themes["friday"] in first.prompt
    assert saturday.theme == "saturday" and saturday.prompt != first.prompt


def test_weekday_is_read_in_the_timestamps_own_offset():
    assert weekday_of("2026-11-27T23:30:00Z") == "friday"
    assert weekday_of("2026-11-28T00:30:00+02:00") == "saturday"  # Friday 22:30 UTC, Saturday where uploaded


def test_weekday_with_an_unreadable_timestamp_fails_the_job():
    with pytest.raises(InvalidInputError) as caught:
        build_prompt([], {"concept": "WEEKDAY"}, "last friday")
    assert (caught.value.reason, caught.value.status) == ("invalid_uploaded_at", "failed")


def test_other_concepts_ignore_uploaded_at():
    assert build_prompt([], {"concept": "BASIC"}, "not a time").theme is None


def test_concept_file_is_checked_on_load(tmp_path):
    data = json.loads(Path(prompts.__file__).with_name("concepts.json").read_text())
    data["concepts"]["OIL"]["drop_negative"] = ["oil"]
    broken = tmp_path / "concepts.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(FatalError, match="'oil' is not a negative term"):
        ConceptBook.from_file(broken)
