"""Rendering a sentence structure in one toy language: words, UPOS, NER tags, a dependency tree.

The renderer is where the languages differ in order and morphology (see `LanguageSpec`):
adjectives after the noun (es, fr, ar), verb-subject-object order (ar), the article as a
prefix (ar), no articles (ru, zh), a two-word negation (fr), a perfective particle (zh), no
spaces (zh). Translations therefore have local reordering, unaligned words and one-to-many
links, like real ones.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from toyworld.grammar import Clause, NounPhrase, Sentence
from toyworld.world import NEGATION, NEGATION_END, PAST_PARTICLE, World, language_spec



@dataclass(eq=False)
class Token:
    form: str
    lemma: str
    upos: str
    ner: str = "O"
    feats: str = "_"
    deprel: str = "dep"
    head: "Token | None" = None  # None: the root


class Renderer:
    """Renders structures in one language; synonyms are chosen by the renderer's own stream."""

    def __init__(self, world: World, lang: str, rng: random.Random) -> None:
        self.spec = language_spec(lang)
        self.lexicon = world.lexicons[lang]
        self.rng = rng

    def _base(self, key: str) -> str:
        forms = self.lexicon[key]
        return forms[0] if len(forms) == 1 else self.rng.choice(forms)

    def _word(self, key: str, upos: str, **attributes) -> Token:
        base = self._base(key)
        return Token(base, base, upos, **attributes)

    def noun_phrase(self, phrase: NounPhrase) -> tuple[list[Token], Token]:
        """Tokens in order, and the phrase's head (the caller sets its relation)."""
        if phrase.pronoun:
            token = self._word(phrase.pronoun, "PRON")
            return [token], token
        if phrase.name:
            tokens = [self._word(k, "PROPN", ner=f"{'B' if i == 0 else 'I'}-{phrase.entity}")
                      for i, k in enumerate(phrase.name)]
            for token in tokens[1:]:
                token.head, token.deprel = tokens[0], "flat"
            return tokens, tokens[0]
        spec = self.spec
        prefix = spec.definite_prefix if phrase.determiner == "DET.definite" else ""
        base = self._base(phrase.noun)
        suffix = spec.plural_suffix if phrase.plural else ""
        noun = Token(prefix + base + suffix, base, "NOUN",
                     feats="Number=Plur" if phrase.plural else "Number=Sing")
        adjectives = [self._word(k, "ADJ", deprel="amod", head=noun) for k in phrase.adjectives]
        for adjective in adjectives:
            adjective.form = prefix + adjective.form  # Arabic adjectives agree in definiteness
        before: list[Token] = []
        role = phrase.determiner.split(".", 1)[1] if phrase.determiner else None
        if role and not prefix and role not in spec.dropped_determiners:
            before.append(self._word(phrase.determiner, "DET", deprel="det", head=noun))
        if phrase.number is not None:
            before.append(Token(str(phrase.number), str(phrase.number), "NUM", deprel="nummod", head=noun))
        if spec.adjective_after_noun:
            return before + [noun] + adjectives, noun
        return before + adjectives + [noun], noun

    def _attach(self, phrase: NounPhrase, deprel: str, head: Token) -> list[Token]:
        tokens, phrase_head = self.noun_phrase(phrase)
        phrase_head.deprel, phrase_head.head = deprel, head
        return tokens

    def clause(self, clause: Clause, deprel: str = "root", head: Token | None = None) -> tuple[list[Token], Token]:
        spec = self.spec
        base = self._base(clause.verb)
        past_suffix = spec.past_suffix if clause.past else ""
        verb = Token(base + past_suffix, base, "VERB", deprel=deprel, head=head,
                     feats=f"Tense={'Past' if clause.past else 'Pres'}|VerbForm=Fin")
        negation_before: list[Token] = []
        after_verb: list[Token] = []
        if clause.negated:
            negation_before.append(self._word(NEGATION, "PART", feats="Polarity=Neg", deprel="advmod", head=verb))
            if spec.discontinuous_negation:
                after_verb.append(self._word(NEGATION_END, "PART", feats="Polarity=Neg", deprel="advmod", head=verb))
        if clause.past and not spec.past_suffix:
            after_verb.append(self._word(PAST_PARTICLE, "AUX", feats="Aspect=Perf", deprel="aux", head=verb))
        subject = self._attach(clause.subject, "nsubj", verb)
        obj = self._attach(clause.obj, "obj", verb) if clause.obj else []
        oblique: list[Token] = []
        if clause.oblique is not None:
            oblique = self._attach(clause.oblique, "obl", verb)
            adposition_head = next(t for t in oblique if t.head is verb)
            oblique.insert(0, self._word(clause.adposition, "ADP", deprel="case", head=adposition_head))
        adverb = [self._word(clause.adverb, "ADV", deprel="advmod", head=verb)] if clause.adverb else []
        verb_group = negation_before + [verb] + after_verb
        if spec.verb_first:  # e.g. Arabic VSO
            order = verb_group + subject + obj + oblique + adverb
        elif spec.prepositional_phrase_before_verb:  # e.g. Chinese: adverbials precede the verb
            order = subject + adverb + oblique + verb_group + obj
        else:
            order = subject + verb_group + obj + oblique + adverb
        return order, verb

    def sentence(self, sentence: Sentence) -> list[Token]:
        tokens, root = self.clause(sentence.clauses[0])
        for clause in sentence.clauses[1:]:
            more, verb = self.clause(clause, "conj", root)
            conjunction = self._word(sentence.conjunction, "CCONJ", deprel="cc", head=verb)
            tokens += [conjunction] + more
        tokens.append(Token(self.spec.period, self.spec.period, "PUNCT", deprel="punct", head=root))
        if self.spec.cased:
            tokens[0].form = tokens[0].form[:1].upper() + tokens[0].form[1:]
        return tokens

    def spaces_after(self, tokens: Sequence[Token]) -> list[bool]:
        """Whether a space follows each token in running text (none before punctuation)."""
        if self.spec.ideographic:
            return [False] * len(tokens)
        return [nxt.upos != "PUNCT" for nxt in tokens[1:]] + [False]

    def text(self, tokens: Sequence[Token]) -> str:
        spaces = self.spaces_after(tokens)
        return "".join(t.form + (" " if space else "") for t, space in zip(tokens, spaces))

