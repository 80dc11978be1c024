"""Realignment: the contrastive loss of paper §3.3 (Eq. 2), its batches, and the methods using it.

A realignment batch is `realign_batch_size` (16, App. B.3) translated sentence pairs. Every word of
the batch, in both languages, is a vector (its first subword, PAPER-NOTES) at hidden state
`realign_layer` of the encoder, optionally passed through Wu & Dredze's projection head. With H
those W vectors and P the extracted translation pairs, Eq. 2 is

    L = -1/(2|P|) sum_{(s,t) in P} [ log softmax_{h in H, h != s}(sim(s,h)/T)[t]
                                   + log softmax_{h in H, h != t}(sim(h,t)/T)[s] ]

with sim the cosine and T = 0.1. The candidates are the words of *both* languages (strong
alignment, §3.2); only the word itself is excluded. Cosine is symmetric, so the second term is
row t of the same similarity matrix: one (W, W) matrix with a masked diagonal, one log-softmax per
row, and the loss is the mean of 2|P| gathered entries.

Methods (`REALIGN_METHODS`): `none`; `before` (sequential: realignment alone, then fine-tuning,
`finetuning.realign_sequentially`); `joint` (Eq. 3 of App. A: each fine-tuning optimizer step adds
`joint_weight` times the loss of one realignment batch, `finetuning.fine_tune(realign=...)`).

Layer: `realign_layer` indexes `hidden_states` (0 = embeddings, -1 = last layer's output). The
reference code's `-1` meant `hidden_states[L-1]`, the penultimate output (PAPER-NOTES); the
`acl2023-code` preset sets -2 to reproduce that.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainables.encoding import encode_words, pool_words
from trainables.runtime import autocast
from trainables.settings import Settings
from trainables.registry import lookup

if TYPE_CHECKING:  # pairs.py is written by another helper; only its attributes are used here
    from trainables.pairs import AlignedCorpus

WORD_POOLING = "first"  # a word is its first subword (PAPER-NOTES), as in alignment measurement


# --------------------------------------------------------------------------------------------
# Eq. 2


def realignment_loss(word_vectors: torch.Tensor, pairs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 2 over W word vectors (W, H) and P translation pairs (P, 2) of row indices into them.

    Computed in fp32 (fp64 for fp64 input) even under bf16 autocast (a softmax over /0.1-scaled cosines). A batch with no
    pair gives a zero that is still connected to the graph (backward works, gradients are zero).
    Pairs must link two different rows (a word is never its own translation).
    """
    if word_vectors.ndim != 2:
        raise ValueError(f"word_vectors must be (W, H), got shape {tuple(word_vectors.shape)}")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be (P, 2) row indices, got shape {tuple(pairs.shape)}")
    if not temperature > 0:
        raise ValueError(f"setting realign_temperature={temperature} must be > 0")
    if pairs.shape[0] == 0:
        return word_vectors.sum() * 0.0
    n_words = word_vectors.shape[0]
    with torch.autocast(device_type=word_vectors.device.type, enabled=False):
        unit = F.normalize(word_vectors.to(torch.promote_types(word_vectors.dtype, torch.float32)), dim=-1)
        logits = (unit @ unit.T) / temperature
        itself = torch.eye(n_words, dtype=torch.bool, device=word_vectors.device)
        log_probs = logits.masked_fill(itself, float("-inf")).log_softmax(dim=-1)
        src, tgt = pairs[:, 0], pairs[:, 1]
        # s searches t among H \ {s}, and t searches s among H \ {t}: rows s and t of one matrix.
        both_directions = torch.cat((log_probs[src, tgt], log_probs[tgt, src]))
        return -both_directions.mean()


class ProjectionHead(nn.Module):
    """Wu & Dredze's projection, as in the reference code: Linear(h,h)-ReLU-Linear(h,d), no biases.

    Used only for the realignment loss; the task head reads the encoder's own states.
    """

    def __init__(self, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(hidden_size, hidden_size, bias=False),
            nn.ReLU(),
            nn.Linear(hidden_size, output_size, bias=False),
        )

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.layers(vectors)


# --------------------------------------------------------------------------------------------
# Batches


@dataclass
class RealignmentBatch:
    """Sentence pairs i = 0..B-1: `en_words[i]` and its translation `x_words[i]` (language `langs[i]`).

    `pairs[k] = (i, src_index, tgt_index)`: English word src_index of pair i translates target
    word tgt_index of pair i.
    """

    langs: list[str]
    en_words: list[list[str]]
    x_words: list[list[str]]
    pairs: torch.Tensor  # (P, 3) long

    def __len__(self) -> int:
        return len(self.en_words)


class RealignmentBatches(Iterator[RealignmentBatch]):
    """Endless, seeded stream of realignment batches mixing all target languages (App. B.3).

    Only sentence pairs with at least one extracted word pair are used. Languages are interleaved
    round-robin: draw k of the stream comes from language `langs[k % n]` (languages sorted by
    name), so each batch of 16 holds 3 or 4 pairs of each of 5 languages. Each language has its
    own order, a fresh seeded permutation per pass over its sentences; when a language runs out it
    restarts ("restarting the data when it ran out", PAPER-NOTES) without affecting the others.

    The whole position is the number of sentence pairs drawn so far: `state_dict()` is small and
    goes into the trial's checkpoint; `load_state_dict()` resumes exactly.
    """

    def __init__(self, corpora: Mapping[str, "AlignedCorpus"], batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"setting realign_batch_size={batch_size} must be >= 1")
        self.batch_size = batch_size
        self.seed = seed
        self.drawn = 0
        self._en: dict[str, Sequence[Sequence[str]]] = {}
        self._x: dict[str, Sequence[Sequence[str]]] = {}
        self._usable: dict[str, np.ndarray] = {}  # sentence ids with >= 1 pair, ascending
        self._pair_rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # start, stop, (src,tgt)
        empty: list[str] = []
        for lang in sorted(corpora):
            usable = self._index_corpus(lang, corpora[lang])
            if usable == 0:
                empty.append(lang)
        self.langs: list[str] = [lang for lang in sorted(corpora) if lang not in empty]
        if not self.langs:
            raise ValueError(f"realignment: no word pair in any language ({', '.join(sorted(corpora)) or 'none given'})")
        if empty:
            warnings.warn(f"realignment: no word pair in language(s) {', '.join(empty)}; they are left out")
        self._permutations: dict[str, tuple[int, np.ndarray]] = {}

    def _index_corpus(self, lang: str, corpus: "AlignedCorpus") -> int:
        frame = corpus.pairs
        missing = [c for c in ("sentence", "src_index", "tgt_index") if c not in frame.columns]
        if missing:
            raise ValueError(f"realignment: pairs of {lang!r} lack column(s) {', '.join(missing)}")
        sentence = frame["sentence"].to_numpy(dtype=np.int64)
        src = frame["src_index"].to_numpy(dtype=np.int64)
        tgt = frame["tgt_index"].to_numpy(dtype=np.int64)
        n_sentences = len(corpus.en_words)
        if len(corpus.x_words) != n_sentences:
            raise ValueError(
                f"realignment: {lang!r} corpus has {n_sentences} English but {len(corpus.x_words)} target sentences"
            )
        if len(sentence):
            bad = np.flatnonzero((sentence < 0) | (sentence >= n_sentences))
            if len(bad):
                raise ValueError(f"realignment: {lang!r} pair row {bad[0]}: sentence {sentence[bad[0]]} not in corpus")
            en_length = np.array([len(s) for s in corpus.en_words], dtype=np.int64)[sentence]
            x_length = np.array([len(s) for s in corpus.x_words], dtype=np.int64)[sentence]
            bad = np.flatnonzero((src < 0) | (src >= en_length) | (tgt < 0) | (tgt >= x_length))
            if len(bad):
                row = bad[0]
                raise ValueError(
                    f"realignment: {lang!r} pair row {row}: word indexes ({src[row]}, {tgt[row]}) outside sentence"
                    f" {sentence[row]} ({en_length[row]} English, {x_length[row]} target words)"
                )
        order = np.argsort(sentence, kind="stable")
        sentence, word_pairs = sentence[order], np.stack((src[order], tgt[order]), axis=1)
        usable = np.unique(sentence)
        self._en[lang], self._x[lang] = corpus.en_words, corpus.x_words
        self._usable[lang] = usable
        starts = np.searchsorted(sentence, usable, side="left")
        stops = np.searchsorted(sentence, usable, side="right")
        self._pair_rows[lang] = (starts, stops, word_pairs)
        return len(usable)

    def __iter__(self) -> "RealignmentBatches":
        return self

    def _permutation(self, lang_index: int, lang: str, epoch: int) -> np.ndarray:
        cached = self._permutations.get(lang)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng((self.seed, lang_index, epoch))
            cached = (epoch, rng.permutation(len(self._usable[lang])))
            self._permutations[lang] = cached
        return cached[1]

    def _draw(self, k: int) -> tuple[str, int]:
        """Language and corpus sentence id of the k-th sentence pair of the stream."""
        n_langs = len(self.langs)
        lang_index = k % n_langs
        lang = self.langs[lang_index]
        count = k // n_langs  # draws of this language before this one
        n_usable = len(self._usable[lang])
        position = self._permutation(lang_index, lang, count // n_usable)[count % n_usable]
        return lang, int(position)

    def __next__(self) -> RealignmentBatch:
        langs, en_words, x_words, pair_blocks = [], [], [], []
        for i in range(self.batch_size):
            lang, position = self._draw(self.drawn + i)
            sentence = int(self._usable[lang][position])
            starts, stops, word_pairs = self._pair_rows[lang]
            block = word_pairs[starts[position] : stops[position]]
            pair_blocks.append(np.concatenate((np.full((len(block), 1), i, dtype=np.int64), block), axis=1))
            langs.append(lang)
            en_words.append(list(self._en[lang][sentence]))
            x_words.append(list(self._x[lang][sentence]))
        self.drawn += self.batch_size
        pairs = torch.from_numpy(np.concatenate(pair_blocks, axis=0))
        return RealignmentBatch(langs=langs, en_words=en_words, x_words=x_words, pairs=pairs)

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn, "seed": self.seed, "batch_size": self.batch_size, "langs": list(self.langs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "batch_size", "langs"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"realignment batches checkpoint has {key}={state[key]!r}, this run {getattr(self, key)!r}:"
                    " resume with the same settings and data"
                )
        self.drawn = int(state["drawn"])


# --------------------------------------------------------------------------------------------
# One realignment loss through an encoder


def realignment_step_loss(
    encoder: PreTrainedModel,
    head: nn.Module | None,
    batch: RealignmentBatch,
    tokenizer: PreTrainedTokenizerBase,
    settings: Settings,
    device: torch.device,
    counts: dict[str, int] | None = None,
) -> torch.Tensor:
    """Eq. 2 for one batch: both sides encoded in one forward pass, words pooled at `realign_layer`.

    Each sentence is truncated to `realign_max_length` subwords (96, the reference's
    scripts/2023_acl/controlled_realignment.py; each side alone, as its
    `AdaptAlignmentToTokenizerMapper`), after XLM-R's lone "▁" pieces are deleted (as there;
    `keep_lone_prefix`). Pairs whose word was truncated away are dropped; `counts`, if given,
    accumulates "pairs" (extracted pairs seen) and "pairs_dropped" (lost to the limit), so that the
    loss can be reported. All index arithmetic happens on CPU before the transfer, so the step has
    no device-to-host synchronisation.
    """
    n_sentence_pairs = len(batch)
    encoded = encode_words(
        tokenizer, batch.en_words + batch.x_words, settings.realign_max_length, keep_lone_prefix=settings.keep_lone_prefix
    )
    n_words = encoded.first_subword.shape[1]
    present = encoded.word_mask.flatten()  # (2B * n_words,) over word slots (sentence, word)
    compact = torch.cumsum(present.long(), 0) - 1  # slot -> row of the word in H
    sentence, src, tgt = batch.pairs.unbind(1)
    src_slot = sentence * n_words + src
    tgt_slot = (sentence + n_sentence_pairs) * n_words + tgt
    kept = present[src_slot] & present[tgt_slot]
    if counts is not None:
        counts["pairs"] = counts.get("pairs", 0) + len(kept)
        counts["pairs_dropped"] = counts.get("pairs_dropped", 0) + int((~kept).sum())
    pair_rows = torch.stack((compact[src_slot[kept]], compact[tgt_slot[kept]]), dim=1)
    word_slots = torch.nonzero(present).squeeze(1)

    with autocast(settings, device):
        output = encoder(**{k: v.to(device) for k, v in encoded.inputs.items()}, output_hidden_states=True)
        hidden_states = output.hidden_states
        if not -len(hidden_states) <= settings.realign_layer < len(hidden_states):
            raise ValueError(
                f"setting realign_layer={settings.realign_layer} outside -{len(hidden_states)}..{len(hidden_states) - 1}"
                f" ({len(hidden_states)} hidden states: embeddings + {len(hidden_states) - 1} layers)"
            )
        words = pool_words(hidden_states[settings.realign_layer], encoded, WORD_POOLING)
        vectors = words.reshape(-1, words.shape[-1]).index_select(0, word_slots.to(device))
        if head is not None:
            vectors = head(vectors)
    return realignment_loss(vectors, pair_rows.to(device), settings.realign_temperature)


class Realigner:
    """The realignment loss as a zero-argument callable, plus its resumable state.

    Holds the encoder (for joint realignment, the task model's own `base_model`), the optional
    projection head, and the batch stream. `parameters()` are the head's, to be optimised with the
    model; `state_dict()` = head weights + stream position, saved in the training checkpoint.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batches: RealignmentBatches,
        settings: Settings,
        device: torch.device,
        head: nn.Module | None = None,
    ) -> None:
        self.encoder, self.tokenizer, self.batches = encoder, tokenizer, batches
        self.settings, self.device = settings, device
        self.head = head.to(device) if head is not None else None

    def __call__(self) -> torch.Tensor:
        batch = next(self.batches)
        return realignment_step_loss(self.encoder, self.head, batch, self.tokenizer, self.settings, self.device)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters()) if self.head is not None else []

    def train(self, mode: bool = True) -> None:
        if self.head is not None:
            self.head.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches.state_dict(),
            "head": self.head.state_dict() if self.head is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        if (state["head"] is None) != (self.head is None):
            raise ValueError("realignment checkpoint and this run disagree on setting realign_projection")
        if self.head is not None:
            self.head.load_state_dict(state["head"])


def build_realigner(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpora: Mapping[str, "AlignedCorpus"],
    settings: Settings,
    seed: int,
    device: torch.device,
) -> Realigner:
    """Realigner on `model.base_model` (the encoder under the task head), seeded by `seed`.

    The projection head (if `realign_projection`) is initialised from `seed` alone, without
    touching the global RNG, so building it does not shift dropout masks elsewhere.
    """
    head = None
    if settings.realign_projection:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = ProjectionHead(model.config.hidden_size, settings.realign_projection_dim)
    batches = RealignmentBatches(corpora, settings.realign_batch_size, seed)
    return Realigner(model.base_model, tokenizer, batches, settings, device, head)


# --------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class RealignMethod:
    """When realignment happens relative to fine-tuning (paper §6, App. A)."""

    name: str
    sequential: bool  # realignment alone before fine-tuning (finetuning.realign_sequentially)
    joint: bool  # realignment loss added at every fine-tuning optimizer step (Eq. 3)
    description: str


REALIGN_METHODS: dict[str, RealignMethod] = {
    "none": RealignMethod("none", sequential=False, joint=False, description="fine-tuning only (baseline)"),
    "before": RealignMethod(
        "before", sequential=True, joint=False,
        description="realignment alone for realign_steps optimizer steps, then fine-tuning (sequential)",
    ),
    "joint": RealignMethod(
        "joint", sequential=False, joint=True,
        description="L = L_task + joint_weight * L_realign at every fine-tuning optimizer step (Eq. 3)",
    ),
}


def get_realign_method(name: str) -> RealignMethod:
    return lookup(REALIGN_METHODS, name, "realignment method")
