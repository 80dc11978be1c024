"""The toy world's languages and lexicons: shared concepts, one surface form per language.

The paper's languages (Gaschi et al. 2023: English as the source; Arabic, Spanish, French,
Russian, Chinese as targets) differ in script and in how much vocabulary they share with
English; the paper relates their alignment to cross-lingual transfer and finds realignment
helps most "when generalizing to a distant language". The toy languages keep those
differences on purpose, so that a tiny model aligns them to different degrees:

* es and fr are written in the Latin script and share many *cognates* with English (an
  English stem with the language's ending: "house" -> "houseo"), as real Romance languages
  share subwords with English; es more than fr. Names keep their English spelling.
* ru (Cyrillic), ar (Arabic, verb-subject-object order, article prefix) and zh (one CJK
  ideograph per word, no spaces) share no letters with English: only digits, and what a
  masked-LM pre-training learns from shared structure, can align them.

Words are drawn by seeded syllable generators per language; every random stream is a named
``random.Random`` (never the global RNG), so each output is deterministic for a seed.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Sequence

from trainables.registry import did_you_mean

DEFAULT_LANGS: tuple[str, ...] = ("ar", "es", "fr", "ru", "zh")
SOURCE_LANG = "en"  # the paper fine-tunes on English and transfers to the others (§4)

@dataclass(frozen=True)
class LexiconSizes:
    """How many concepts of each kind the world has (shared by all languages)."""

    nouns: int = 60
    verbs: int = 30
    adjectives: int = 24
    adverbs: int = 8
    adpositions: int = 8
    pronouns: int = 6
    first_names: int = 16
    last_names: int = 16
    organisations: int = 12
    organisation_types: int = 4  # "Bank", "Group"...: translated, unlike the names
    places: int = 16
    zipf_exponent: float = 1.0  # content words are drawn with weight 1 / rank**exponent
    synonym_rate: float = 0.08  # content concepts with a second form in a target language
    homonym_rate: float = 0.05  # content concepts sharing another concept's form (target side)
    # Selectional preferences (opt-in; 1 = none, the default world): each content concept
    # belongs to `topics_per_concept` of `topics` topics, and a clause draws its content words
    # from one topic (`GrammarRates.on_topic`). Without them every noun has the contexts of
    # every other noun of its frequency, so pre-training cannot tell "cat" from "dog", nor a
    # word's translation from its language's other nouns (strong alignment, §3.1).
    topics: int = 1
    topics_per_concept: int = 1


NUMBER_RANGE = (2, 99)  # cardinal numbers, written in digits in every language
SYLLABLES_BY_UPOS = {  # (min, max) syllables of a generated word
    "NOUN": (1, 3), "VERB": (1, 3), "ADJ": (1, 3), "ADV": (1, 3), "PROPN": (2, 3),
    "DET": (1, 1), "ADP": (1, 1), "PRON": (1, 1), "CCONJ": (1, 1), "PART": (1, 1), "AUX": (1, 1),
}
MAX_WORD_ATTEMPTS = 200  # fresh syllable draws before a word gets one syllable more
DETERMINER_ROLES = ("definite", "indefinite", "demonstrative", "quantifier")
CONJUNCTIONS = ("and", "but")
NEGATION = "PART.not"
NEGATION_END = "PART.not-end"  # second half of a discontinuous negation (fr "ne ... pas")
PAST_PARTICLE = "AUX.past"  # perfective particle of languages without a past suffix (zh "了")
CJK_EXTENSION_A = (0x3400, 0x4DBF)  # ideographs outside jieba's Han regex: it never merges them


@dataclass(frozen=True)
class LanguageSpec:
    """How one language writes the shared concepts and orders a clause."""

    code: str
    treebank: str  # UD file stem, as in ../shared/data/ud
    onsets: tuple[str, ...] = ()
    nuclei: tuple[str, ...] = ()
    codas: tuple[str, ...] = ()
    ideographic: bool = False  # one CJK ideograph per word, no spaces between words
    cased: bool = True  # capitalise the first word of a sentence
    plural_suffix: str = ""
    past_suffix: str = ""  # empty: a perfective particle follows the verb
    definite_prefix: str = ""  # the definite article glued to nouns and adjectives (ar)
    dropped_determiners: tuple[str, ...] = ()  # determiner roles the language leaves unsaid
    adjective_after_noun: bool = False
    verb_first: bool = False  # verb-subject-object clause order
    prepositional_phrase_before_verb: bool = False
    discontinuous_negation: bool = False
    latin_names: bool = False  # names keep their English spelling
    period: str = "."
    # Content concepts written as the English stem plus one of `cognate_endings` (Latin-script
    # languages only): shared subwords, the toy counterpart of the vocabulary real Spanish and
    # French share with English, which makes them "close" languages and Arabic a distant one.
    cognate_rate: float = 0.0
    cognate_endings: tuple[str, ...] = ()


LANGUAGES: dict[str, LanguageSpec] = {
    spec.code: spec
    for spec in (
        LanguageSpec(
            code="en", treebank="en_ewt",
            onsets=("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
                    "th", "sh", "ch", "st", "br", "tr", "gl"),
            nuclei=("a", "e", "i", "o", "u", "ea", "oo", "ai"),
            codas=("", "", "n", "t", "ck", "ng", "st", "ll", "r", "m"),
            plural_suffix="s", past_suffix="ed",
        ),
        LanguageSpec(
            code="es", treebank="es_gsd",
            onsets=("b", "c", "d", "f", "g", "j", "l", "m", "n", "p", "r", "s", "t", "v", "ll", "ch", "ñ"),
            nuclei=("a", "e", "i", "o", "u", "ue", "ie", "á"),
            codas=("", "", "", "n", "s", "r", "l"),
            plural_suffix="s", past_suffix="ó", adjective_after_noun=True, latin_names=True,
            cognate_rate=0.8, cognate_endings=("o", "a", "e"),
        ),
        LanguageSpec(
            code="fr", treebank="fr_gsd",
            onsets=("b", "c", "d", "f", "g", "j", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "qu", "gr"),
            nuclei=("a", "e", "i", "o", "ou", "é", "è", "ai", "eau", "oi"),
            codas=("", "", "", "r", "n", "t", "s", "l"),
            plural_suffix="s", past_suffix="ait", adjective_after_noun=True,
            discontinuous_negation=True, latin_names=True,
            cognate_rate=0.4, cognate_endings=("e", "é", "eur"),
        ),
        LanguageSpec(
            code="ru", treebank="ru_gsd",
            onsets=("б", "в", "г", "д", "ж", "з", "к", "л", "м", "н", "п", "р", "с", "т", "ф", "х", "ч",
                    "ш", "ст", "пр"),
            nuclei=("а", "е", "и", "о", "у", "я", "ю", "ы"),
            codas=("", "", "н", "т", "к", "р", "с", "й", "л"),
            plural_suffix="ы", past_suffix="ла", dropped_determiners=("definite", "indefinite"),
        ),
        LanguageSpec(
            code="ar", treebank="ar_padt",
            onsets=tuple("بتثجحخدذرزسشصضطعغفقكلمنه"),
            nuclei=("ا", "و", "ي", ""),
            codas=("", "", "ب", "د", "ر", "س", "ل", "م", "ن", "ق"),
            cased=False, plural_suffix="ات", past_suffix="ت", definite_prefix="ال",
            dropped_determiners=("indefinite",), adjective_after_noun=True, verb_first=True,
        ),
        LanguageSpec(
            code="zh", treebank="zh_gsd", ideographic=True, cased=False,
            dropped_determiners=("definite", "indefinite"), prepositional_phrase_before_verb=True,
            period="。",
        ),
    )
}


def language_spec(code: str) -> LanguageSpec:
    """The spec of a toy language, with a "did you mean" error for unknown codes."""
    if code not in LANGUAGES:
        raise KeyError(f"toy language {code!r} is not one of {sorted(LANGUAGES)}{did_you_mean(code, LANGUAGES)}")
    return LANGUAGES[code]


def _rng(seed: int, *stream: str) -> random.Random:
    """An independent, named random stream: changing one output size never shifts another."""
    return random.Random("/".join(("toy", str(seed), *stream)))  # str seeds hash with SHA-512


# --------------------------------------------------------------------------------------------
# The world: concepts and one lexicon per language
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    key: str  # e.g. "NOUN.12", "DET.definite", "PROPN.place.3"
    upos: str
    weight: float  # relative frequency when the grammar draws a word of this kind
    topics: frozenset[int] = frozenset()  # content concepts only: the topics it is drawn in


@dataclass(frozen=True)
class World:
    seed: int
    langs: tuple[str, ...]  # target languages (English is always there too)
    concepts: dict[str, Concept]
    by_kind: dict[str, tuple[str, ...]]  # "NOUN", "first_name"... -> concept keys
    lexicons: dict[str, dict[str, tuple[str, ...]]]  # lang -> concept key -> base forms
    topics: int = 1  # how many topics the content concepts are dealt into (LexiconSizes.topics)

    def draw(self, rng: random.Random, kind: str, topic: int | None = None) -> str:
        """A concept of this kind by weight; with a topic, only those of the topic (content
        kinds; other kinds ignore it)."""
        keys = self.by_kind[kind]
        if topic is not None and kind in CONTENT_KINDS:
            keys = tuple(k for k in keys if topic in self.concepts[k].topics) or keys
        return rng.choices(keys, weights=[self.concepts[k].weight for k in keys])[0]


def _zipf_concepts(prefix: str, upos: str, count: int, exponent: float) -> list[Concept]:
    return [Concept(f"{prefix}.{rank}", upos, 1.0 / (rank + 1) ** exponent) for rank in range(count)]


def _make_concepts(sizes: LexiconSizes) -> tuple[dict[str, Concept], dict[str, tuple[str, ...]]]:
    z = sizes.zipf_exponent
    by_kind: dict[str, list[Concept]] = {
        "DET": [Concept(f"DET.{role}", "DET", 1.0) for role in DETERMINER_ROLES],
        "PRON": _zipf_concepts("PRON", "PRON", sizes.pronouns, 0.0),
        "ADP": _zipf_concepts("ADP", "ADP", sizes.adpositions, z),
        "CCONJ": [Concept(f"CCONJ.{name}", "CCONJ", 1.0) for name in CONJUNCTIONS],
        "PART": [Concept(NEGATION, "PART", 1.0), Concept(NEGATION_END, "PART", 1.0)],
        "AUX": [Concept(PAST_PARTICLE, "AUX", 1.0)],
        "NOUN": _zipf_concepts("NOUN", "NOUN", sizes.nouns, z),
        "VERB": _zipf_concepts("VERB", "VERB", sizes.verbs, z),
        "ADJ": _zipf_concepts("ADJ", "ADJ", sizes.adjectives, z),
        "ADV": _zipf_concepts("ADV", "ADV", sizes.adverbs, z),
        "first_name": _zipf_concepts("PROPN.first", "PROPN", sizes.first_names, z),
        "last_name": _zipf_concepts("PROPN.last", "PROPN", sizes.last_names, z),
        "organisation": _zipf_concepts("PROPN.org", "PROPN", sizes.organisations, z),
        "organisation_type": _zipf_concepts("PROPN.orgtype", "PROPN", sizes.organisation_types, z),
        "place": _zipf_concepts("PROPN.place", "PROPN", sizes.places, z),
    }
    if not 1 <= sizes.topics_per_concept <= sizes.topics:
        raise ValueError(f"LexiconSizes: topics_per_concept={sizes.topics_per_concept} must be between 1 and "
                         f"topics={sizes.topics}")
    topic_rng = random.Random(f"toy/topics/{sizes.topics}/{sizes.topics_per_concept}")  # its own stream
    for kind in CONTENT_KINDS:
        # Dealt round-robin over a shuffled order, so every topic gets words of every kind.
        order = list(range(sizes.topics))
        for index, concept in enumerate(by_kind[kind]):
            if index % sizes.topics == 0:
                topic_rng.shuffle(order)
            first = order[index % sizes.topics]
            others = topic_rng.sample([t for t in range(sizes.topics) if t != first], sizes.topics_per_concept - 1)
            by_kind[kind][index] = dataclasses.replace(concept, topics=frozenset([first, *others]))
    concepts = {c.key: c for group in by_kind.values() for c in group}
    return concepts, {kind: tuple(c.key for c in group) for kind, group in by_kind.items()}


NAME_KINDS = ("first_name", "last_name", "organisation", "place")  # kept in Latin by `latin_names`
CONTENT_KINDS = ("NOUN", "VERB", "ADJ", "ADV")  # where synonyms and homonyms are planted


def _inflections(spec: LanguageSpec, upos: str) -> tuple[str, ...]:
    """Suffixes a base form takes in this language (the empty one is the base form itself)."""
    if upos == "NOUN" and spec.plural_suffix:
        return ("", spec.plural_suffix)
    if upos == "VERB" and spec.past_suffix:
        return ("", spec.past_suffix)
    return ("",)


def _surface_forms(spec: LanguageSpec, upos: str, base: str) -> set[str]:
    forms = {base + suffix for suffix in _inflections(spec, upos)}
    if spec.definite_prefix and upos in ("NOUN", "ADJ"):
        forms |= {spec.definite_prefix + form for form in forms}
    return forms


def _new_word(rng: random.Random, spec: LanguageSpec, upos: str, taken: set[str]) -> str:
    """A fresh word none of whose inflected forms is already a form of the language."""
    if spec.ideographic:  # one ideograph per word: any segmenter recovers the words
        while True:
            word = chr(rng.randint(*CJK_EXTENSION_A))
            if word not in taken:
                return word
    low, high = SYLLABLES_BY_UPOS[upos]
    attempt = 0
    while True:
        extra = attempt // MAX_WORD_ATTEMPTS  # the short-word space is exhausted: grow
        syllables = rng.randint(low, high) + extra
        word = "".join(
            rng.choice(spec.onsets) + rng.choice(spec.nuclei) + rng.choice(spec.codas)
            for _ in range(syllables)
        )
        if upos == "PROPN" and spec.cased:
            word = word[:1].upper() + word[1:]
        forms = _surface_forms(spec, upos, word)
        if not forms & taken:
            return word
        attempt += 1


def _make_lexicon(
    spec: LanguageSpec, world_concepts: dict[str, Concept], by_kind: dict[str, tuple[str, ...]],
    english: dict[str, tuple[str, ...]] | None, sizes: LexiconSizes, seed: int,
) -> dict[str, tuple[str, ...]]:
    rng = _rng(seed, "lexicon", spec.code)
    taken: set[str] = set()
    lexicon: dict[str, tuple[str, ...]] = {}
    name_keys = {k for kind in NAME_KINDS for k in by_kind[kind]}
    for key, concept in world_concepts.items():
        if english is not None and spec.latin_names and key in name_keys:
            word = english[key][0]  # "Maria" stays "Maria": identical pairs the filter must drop
        else:
            word = _new_word(rng, spec, concept.upos, taken)
        taken |= _surface_forms(spec, concept.upos, word)
        lexicon[key] = (word,)
    if english is None:  # English is the pivot: one form per concept
        return lexicon
    content = [k for kind in CONTENT_KINDS for k in by_kind[kind]]
    cognates = _rng(seed, "cognates", spec.code)  # its own stream: the rate leaves other words alone
    for key in content:
        if spec.cognate_endings and cognates.random() < spec.cognate_rate:
            word = english[key][0] + cognates.choice(spec.cognate_endings)
            forms = _surface_forms(spec, world_concepts[key].upos, word)
            if not forms & taken:
                taken |= forms
                lexicon[key] = (word,)
    # Ambiguity, as in MUSE (§3.2): a few concepts get two forms (synonyms, one en -> two x), a
    # few reuse another concept's form (homonyms, two en -> one x).
    for key in rng.sample(content, round(sizes.synonym_rate * len(content))):
        word = _new_word(rng, spec, world_concepts[key].upos, taken)
        taken |= _surface_forms(spec, world_concepts[key].upos, word)
        lexicon[key] = lexicon[key] + (word,)
    for key in rng.sample(content, round(sizes.homonym_rate * len(content))):
        same_pos = [k for k in content if world_concepts[k].upos == world_concepts[key].upos and k != key]
        lexicon[key] = (lexicon[rng.choice(same_pos)][0],) + lexicon[key][1:]
    return lexicon


def make_world(seed: int = 0, langs: Sequence[str] = DEFAULT_LANGS, sizes: LexiconSizes = LexiconSizes()) -> World:
    """Concepts and every language's lexicon, deterministic for a seed."""
    targets = tuple(langs)
    for code in targets:
        language_spec(code)
    if SOURCE_LANG in targets:
        raise ValueError(f"langs={targets}: {SOURCE_LANG!r} is the source language, not a target")
    concepts, by_kind = _make_concepts(sizes)
    english = _make_lexicon(LANGUAGES[SOURCE_LANG], concepts, by_kind, None, sizes, seed)
    lexicons = {SOURCE_LANG: english}
    for code in targets:
        lexicons[code] = _make_lexicon(LANGUAGES[code], concepts, by_kind, english, sizes, seed)
    return World(seed, targets, concepts, by_kind, lexicons, sizes.topics)
