"""Captions → weighted desk objects. Pure functions; the word lists live in ``vocabulary.json``.

Steps, per caption:
1. ``normalise``: lower case, BLIP's spacing artefacts undone (``desk _ setup : _`` → ``desk_setup:``).
2. ``strip_echo``: BLIP decodes the conditional prompt back; the prompt's words are removed.
3. ``split_items``: an object list ("a laptop, a keyboard, and a monitor") splits at punctuation
   and list words (and, or, with, …).
4. ``objects_in``: each item is singularised word by word and matched against the vocabulary,
   longest phrase first; words that are not desk objects are dropped.

Weight: the seed observed that the more important an object, the more of the prompts' captions
mention it. ``extract_keywords`` counts, per object, the captions that mention it (a caption that
repeats an object — BLIP's "mouse, and mouse" loop — counts once) and orders by that count, then by
first mention.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["Keyword", "Vocabulary", "vocabulary", "normalise", "strip_echo", "split_items",
           "singularise", "objects_in", "extract_keywords"]

_VOCABULARY_FILE = Path(__file__).with_name("vocabulary.json")
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@dataclass(frozen=True)
class Keyword:
    word: str
    count: int


@dataclass(frozen=True)
class Vocabulary:
    phrases: dict[tuple[str, ...], str]  # singular word sequence -> canonical object
    irregular_plurals: dict[str, str]
    plural_only: frozenset[str]
    list_words: frozenset[str]
    longest_phrase: int

    @classmethod
    def from_file(cls, path: Path) -> "Vocabulary":
        data = json.loads(path.read_text())
        irregular = data["irregular_plurals"]
        plural_only = frozenset(data["plural_only"])
        phrases: dict[tuple[str, ...], str] = {}
        for canonical, aliases in data["objects"].items():
            for alias in [canonical, *aliases]:
                key = tuple(_singular(w, irregular, plural_only) for w in alias.split())
                if phrases.setdefault(key, canonical) != canonical:
                    raise ValueError(f"{path.name}: {alias!r} names both {phrases[key]!r} and {canonical!r}")
        return cls(phrases, irregular, plural_only, frozenset(data["list_words"]), max(map(len, phrases)))


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    """The packaged vocabulary, read once."""
    return Vocabulary.from_file(_VOCABULARY_FILE)


def normalise(text: str) -> str:
    """Lower case, single spaces, ``a _ b`` → ``a_b``, no space before ``:;,.?!``, no stray ``_``."""
    text = " ".join(text.lower().split())
    text = re.sub(r"(?<=[a-z0-9]) _ (?=[a-z0-9])", "_", text)
    text = re.sub(r"\s+([:;,.?!])", r"\1", text)
    text = re.sub(r"(?:(?<=\s)|^)_+(?=\s|$)", "", text)
    return " ".join(text.split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", normalise(text))


def strip_echo(caption: str, prompt: str) -> str:
    """``caption`` (normalised) without the leading echo of ``prompt``; unchanged if it is not echoed.

    Words are compared, not characters, so punctuation and spacing differences do not matter.
    """
    text = normalise(caption)
    expected = _words(prompt)
    if not expected:
        return text
    position = 0
    for match in re.finditer(r"[a-z0-9]+", text):
        if match.group() != expected[position]:
            return text
        position += 1
        if position == len(expected):
            return text[match.end():].lstrip(" _:;,.?!")
    return ""  # the caption is the prompt, or a prefix of it: nothing new was said


def split_items(text: str, vocab: Vocabulary | None = None) -> list[list[str]]:
    """Split a caption into list items (word lists) at punctuation and list words."""
    vocab = vocab or vocabulary()
    items: list[list[str]] = [[]]
    for token in _TOKEN.findall(normalise(text)):
        if not token.isalnum() or token in vocab.list_words:
            if items[-1]:
                items.append([])
        else:
            items[-1].append(token)
    return [item for item in items if item]


def _singular(word: str, irregular: dict[str, str], plural_only: frozenset[str]) -> str:
    if word in irregular:
        return irregular[word]
    if word in plural_only or len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def singularise(word: str, vocab: Vocabulary | None = None) -> str:
    """English plural → singular, good enough for desk objects (``mice`` → ``mouse``, ``boxes`` → ``box``)."""
    vocab = vocab or vocabulary()
    return _singular(word, vocab.irregular_plurals, vocab.plural_only)


def objects_in(item: list[str], vocab: Vocabulary | None = None) -> list[str]:
    """Canonical objects named in one list item, left to right, longest phrase first."""
    vocab = vocab or vocabulary()
    words = [singularise(w, vocab) for w in item]
    found: list[str] = []
    start = 0
    while start < len(words):
        for length in range(min(vocab.longest_phrase, len(words) - start), 0, -1):
            canonical = vocab.phrases.get(tuple(words[start:start + length]))
            if canonical:
                found.append(canonical)
                start += length
                break
        else:
            start += 1
    return found


def extract_keywords(captions: list[tuple[str, str]], vocab: Vocabulary | None = None) -> list[Keyword]:
    """Weighted objects from ``(prompt, caption text)`` pairs.

    ``count`` = how many captions mention the object; order: count descending, then first mention.
    """
    vocab = vocab or vocabulary()
    counts: dict[str, int] = {}
    for prompt, text in captions:
        mentioned = dict.fromkeys(
            obj for item in split_items(strip_echo(text, prompt), vocab) for obj in objects_in(item, vocab))
        for obj in mentioned:
            counts[obj] = counts.get(obj, 0) + 1
    first_mention = {obj: i for i, obj in enumerate(counts)}
    return [Keyword(obj, n) for obj, n in sorted(counts.items(), key=lambda kv: (-kv[1], first_mention[kv[0]]))]
