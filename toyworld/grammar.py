"""The toy world's grammar: language-independent sentence structures, drawn from seeded streams.

One small grammar (clauses with a subject, a verb, an optional object, prepositional phrase and
adverb; noun phrases with determiners, adjectives, numbers, or named entities) makes the
structures every language renders (`toyworld.render`). Translations are renderings of the same
structure, so a parallel corpus, XNLI-style translated test sets and word pairs all come for
free. The NLI rules make each label follow from the premise (Gaschi et al. 2023 use XNLI).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from toyworld.world import NUMBER_RANGE, World

NLI_LABELS: tuple[str, ...] = ("contradiction", "entailment", "neutral")
NER_TYPES: tuple[str, ...] = ("PER", "ORG", "LOC")


@dataclass(frozen=True)
class GrammarRates:
    """Probabilities of the grammar's optional parts."""

    pronoun: float = 0.15  # a noun phrase is a pronoun
    entity: float = 0.2  # a noun phrase is a named entity (person or organisation)
    place: float = 0.3  # a prepositional phrase's noun phrase is a place name
    adjective: float = 0.4  # a common noun gets an adjective
    second_adjective: float = 0.3  # ... and a second one
    number: float = 0.1  # a common noun gets a cardinal number (and is plural)
    plural: float = 0.3
    object: float = 0.8
    prepositional_phrase: float = 0.4
    adverb: float = 0.2
    negation: float = 0.2
    past: float = 0.4
    coordination: float = 0.15  # a second clause joined by a conjunction
    entity_rich: float = 0.6  # `entity` for WikiANN sentences, which always hold an entity
    full_name: float = 0.7  # a person is named by first and last name (else last name only)
    organisation_type: float = 0.6  # an organisation's name ends with a type word ("... Bank")
    keep_modifier: float = 0.5  # NLI: a hypothesis keeps each premise modifier with this chance
    on_topic: float = 0.85  # a clause's content word is drawn from the clause's topic (else any)


@dataclass(frozen=True)
class NounPhrase:
    noun: str | None = None  # common noun concept
    determiner: str | None = None
    adjectives: tuple[str, ...] = ()
    number: int | None = None
    plural: bool = False
    pronoun: str | None = None
    name: tuple[str, ...] = ()  # PROPN concepts of a named entity
    entity: str | None = None  # PER, ORG or LOC


@dataclass(frozen=True)
class Clause:
    subject: NounPhrase
    verb: str
    past: bool = False
    negated: bool = False
    obj: NounPhrase | None = None
    adposition: str | None = None  # with `oblique`: a prepositional phrase
    oblique: NounPhrase | None = None
    adverb: str | None = None


@dataclass(frozen=True)
class Sentence:
    clauses: tuple[Clause, ...]
    conjunction: str | None = None


def _entity(world: World, rng: random.Random, rates: GrammarRates, entity: str) -> NounPhrase:
    """A multi-word name where the world allows it, so NER has B- and I- tags (IOB2)."""
    if entity == "PER":
        name = (world.draw(rng, "first_name"), world.draw(rng, "last_name"))
        name = name if rng.random() < rates.full_name else name[1:]
    elif entity == "ORG":
        name = (world.draw(rng, "organisation"), world.draw(rng, "organisation_type"))
        name = name if rng.random() < rates.organisation_type else name[:1]
    else:
        name = (world.draw(rng, "place"),)
    return NounPhrase(name=name, entity=entity)


def _topic(rng: random.Random, rates: GrammarRates, topic: int | None) -> int | None:
    """The clause's topic for one content word, or None (off topic) with 1 - on_topic. A world
    without topics draws nothing here, so its sentences are those it had before topics existed."""
    if topic is None:
        return None
    return topic if rng.random() < rates.on_topic else None


def _noun_phrase(world: World, rng: random.Random, rates: GrammarRates, entity_rate: float,
                 topic: int | None = None) -> NounPhrase:
    if rng.random() < rates.pronoun:
        return NounPhrase(pronoun=world.draw(rng, "PRON"))
    if rng.random() < entity_rate:
        return _entity(world, rng, rates, rng.choice(("PER", "ORG")))
    adjectives: tuple[str, ...] = ()
    if rng.random() < rates.adjective:
        adjectives = (world.draw(rng, "ADJ", _topic(rng, rates, topic)),)
        if rng.random() < rates.second_adjective:
            second = world.draw(rng, "ADJ", _topic(rng, rates, topic))
            adjectives += () if second in adjectives else (second,)
    number = rng.randint(*NUMBER_RANGE) if rng.random() < rates.number else None
    plural = number is not None or rng.random() < rates.plural
    determiner = world.draw(rng, "DET")
    if plural and determiner in ("DET.indefinite", "DET.quantifier"):
        determiner = "DET.definite"  # "a cats" / "every cats" are not phrases
    return NounPhrase(world.draw(rng, "NOUN", _topic(rng, rates, topic)), determiner, adjectives, number, plural)


def clause(world: World, rng: random.Random, rates: GrammarRates, entity_rate: float) -> Clause:
    topic = rng.randrange(world.topics) if world.topics > 1 else None
    subject = _noun_phrase(world, rng, rates, entity_rate, topic)
    verb = world.draw(rng, "VERB", _topic(rng, rates, topic))
    past = rng.random() < rates.past
    negated = rng.random() < rates.negation
    obj = _noun_phrase(world, rng, rates, entity_rate, topic) if rng.random() < rates.object else None
    adposition = oblique = None
    if rng.random() < rates.prepositional_phrase:
        adposition = world.draw(rng, "ADP")
        oblique = (_entity(world, rng, rates, "LOC") if rng.random() < rates.place
                   else _noun_phrase(world, rng, rates, entity_rate, topic))
    adverb = world.draw(rng, "ADV", _topic(rng, rates, topic)) if rng.random() < rates.adverb else None
    return Clause(subject, verb, past, negated, obj, adposition, oblique, adverb)


def sentence(world: World, rng: random.Random, rates: GrammarRates, entity_rate: float) -> Sentence:
    first = clause(world, rng, rates, entity_rate)
    if rng.random() < rates.coordination:
        return Sentence((first, clause(world, rng, rates, entity_rate)), world.draw(rng, "CCONJ"))
    return Sentence((first,))


def _has_entity(structure: Sentence) -> bool:
    phrases = [p for c in structure.clauses for p in (c.subject, c.obj, c.oblique) if p is not None]
    return any(p.entity for p in phrases)


def entity_sentence(world: World, rng: random.Random, rates: GrammarRates) -> Sentence:
    """WikiANN-like: every sentence holds at least one named entity."""
    while True:
        drawn = sentence(world, rng, rates, rates.entity_rich)
        if _has_entity(drawn):
            return drawn


def nli_hypothesis(world: World, rng: random.Random, rates: GrammarRates, premise: Clause, label: str) -> Clause:
    """A hypothesis whose label follows from the premise (a learnable, translatable rule).

    entailment: the premise minus some modifiers (less specific, still implied);
    contradiction: the same, with the negation toggled;
    neutral: same subject, a new verb and object (neither implied nor excluded).
    """
    def keep(part):
        return part if rng.random() < rates.keep_modifier else None

    def simplify(phrase: NounPhrase | None) -> NounPhrase | None:
        if phrase is None or not phrase.adjectives:
            return phrase
        return replace(phrase, adjectives=tuple(a for a in phrase.adjectives if keep(a)))

    hypothesis = replace(premise, subject=simplify(premise.subject), obj=simplify(premise.obj),
                         adverb=keep(premise.adverb))
    if keep(premise.oblique) is None:
        hypothesis = replace(hypothesis, adposition=None, oblique=None)
    if label == "contradiction":
        return replace(hypothesis, negated=not premise.negated)
    if label == "neutral":
        other = clause(world, rng, rates, rates.entity)
        verb = other.verb if other.verb != premise.verb else world.draw(rng, "VERB")
        return replace(other, subject=premise.subject, verb=verb, negated=premise.negated)
    return hypothesis

