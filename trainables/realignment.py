"""Realignment methods: when realignment runs (schedule) and what it optimises (objective).

A realignment batch is `realign_batch_size` (16, App. B.3) translated sentence pairs. Every word of
the batch, in both languages, is a vector (its first subword) at hidden state `realign_layer` of
the encoder. Each method of `REALIGN_METHODS` is one `RealignMethod` entry: its schedule (`none`;
`before`: realignment alone, then fine-tuning, `finetuning.realign_sequentially`; `joint`: the
realignment loss added at each fine-tuning optimizer step, Eq. 3 of App. A) and the objective that
computes the loss of one batch. The trial asks the entry and never names a method.

Objectives:

- contrastive (`before`, `joint`; paper §3.3, Eq. 2). With H the W word vectors, optionally
  passed through Wu & Dredze's projection head, and P the extracted translation pairs,

      L = -1/(2|P|) sum_{(s,t) in P} [ log softmax_{h in H, h != s}(sim(s,h)/T)[t]
                                     + log softmax_{h in H, h != t}(sim(h,t)/T)[s] ]

  with sim the cosine and T = 0.1. The candidates are the words of *both* languages (strong
  alignment, §3.2); only the word itself is excluded. Cosine is symmetric, so the second term is
  row t of the same similarity matrix: one (W, W) matrix with a masked diagonal, one log-softmax
  per row, and the loss is the mean of 2|P| gathered entries.
- l2 (Cao et al. 2020, as in Wu & Dredze's `Aligner.l2_loss` and `l2_src_reg`,
  src/model/aligner.py): the mean squared L2 distance between the vectors of each pair, plus
  `L2_SOURCE_WEIGHT` times the mean squared distance of every English subword's vector to what a
  frozen copy of the pre-trained encoder gives it. The whole encoder is trained.
- linear (Wang et al. 2019, as in Wu & Dredze's `Aligner.linear_loss`, run with
  example/contrastive-alignment/alignment-linear.sh): the encoder is frozen; one linear map
  (H x H, no bias, initialised to the identity) per target language and per hidden state 0..L is
  trained to send the target word's vector onto its English translation's, the mean squared
  distance averaged over hidden states, with the orthogonalisation step W <- (1+b)W - b W W^T W
  (b = `ORTHOGONAL_BETA`) before each loss. Afterwards the maps are part of the model
  (`LanguageMaps`): inside `input_language(model, x)`, every hidden state the encoder outputs for
  a language-x input is mapped (and the last one is what the task head reads), so the fine-tuned
  model's scores on x and the alignment measured for x both see the mapped vectors; English is
  never mapped. The maps stay frozen during fine-tuning, as Wu & Dredze's `Model.mapping`
  (src/model/base.py, `util.freeze`); fine-tuning changes the encoder under them.

The l2 and linear objectives take neither the projection head (Wu & Dredze ran them with
`aligner_projector id`) nor, for linear, `realign_layer` (every hidden state has its map). All
realign before fine-tuning with the optimizer, steps and schedule of `before` (the paper keeps the
same hyper-parameters for every realignment, §6 / App. B.3).

Layer: `realign_layer` indexes `hidden_states` (0 = embeddings, -1 = last layer's output). The
reference code's `-1` meant `hidden_states[L-1]`, the penultimate output; the `acl2023-code`
preset sets -2 to reproduce that.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainables.encoding import EncodedWords, encode_words, pool_words
from trainables.models import model_family
from trainables.runtime import autocast
from trainables.settings import Settings
from trainables.registry import lookup
from trainables.shuffle import SHUFFLE_BUFFER, ShuffledStream

if TYPE_CHECKING:  # pairs.py imports nothing from here; only its attributes are used
    from trainables.pairs import AlignedCorpus

WORD_POOLING = "first"  # a word is its first subword, as in alignment measurement
# Cao et al. 2020's weight of the source regulariser (lambda = 1); Wu & Dredze's `l2_src_reg`
# computes it as below (mean over the English subwords of the squared distance).
L2_SOURCE_WEIGHT = 1.0
# Wu & Dredze's alignment-linear.sh: `--aligner_orthogonal 0.01` ("0.01 is better than 0 or 0.001").
ORTHOGONAL_BETA = 0.01


# --------------------------------------------------------------------------------------------
# The objectives' losses on plain tensors


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


def l2_alignment_loss(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of the squared L2 distance ||s - t||^2 (Wu & Dredze, `Aligner.l2_loss`).

    src, tgt: (P, H), row i of one translating row i of the other. Computed in fp32 (fp64 for fp64
    input). No pair gives a zero still connected to the graph.
    """
    if src.shape != tgt.shape or src.ndim != 2:
        raise ValueError(f"src and tgt must both be (P, H), got {tuple(src.shape)} and {tuple(tgt.shape)}")
    if src.shape[0] == 0:
        return (src.sum() + tgt.sum()) * 0.0
    dtype = torch.promote_types(src.dtype, torch.float32)
    with torch.autocast(device_type=src.device.type, enabled=False):
        return (src.to(dtype) - tgt.to(dtype)).pow(2).sum(dim=-1).mean()


def source_regulariser(current: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions of ||current - original||^2 (Wu & Dredze, `l2_src_reg`).

    current, original: (B, T, H) states of the English inputs from the trained and the frozen
    pre-trained encoder; mask: (B, T), 1 on the real subwords (special tokens included), 0 on padding.
    """
    if current.shape != original.shape or current.ndim != 3 or mask.shape != current.shape[:2]:
        raise ValueError(f"current, original must be (B, T, H) and mask (B, T), got {tuple(current.shape)},"
                         f" {tuple(original.shape)}, {tuple(mask.shape)}")
    dtype = torch.promote_types(current.dtype, torch.float32)
    with torch.autocast(device_type=current.device.type, enabled=False):
        weight = mask.to(dtype).unsqueeze(-1)
        squared = ((current.to(dtype) - original.to(dtype)) * weight).pow(2).sum()
        return squared / weight.sum().clamp(min=1.0)


def mapped(vectors: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`nn.Linear` without bias, one matrix per hidden state: (S, ..., H) x (S, H, H) -> (S, ..., H)."""
    flat = vectors.reshape(vectors.shape[0], -1, vectors.shape[-1])
    return torch.bmm(flat, weight.transpose(1, 2)).reshape(vectors.shape)


def linear_mapping_loss(src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over hidden states of the mean over pairs of ||s - W t||^2 (Wu & Dredze, `linear_loss`).

    src, tgt: (S, P, H) vectors of P pairs at S hidden states; weight: (S, H, H), the target
    language's map at each hidden state (W t = t @ W^T, as `nn.Linear`).
    """
    if src.shape != tgt.shape or src.ndim != 3 or weight.shape != (src.shape[0], src.shape[2], src.shape[2]):
        raise ValueError(f"src, tgt must be (S, P, H) and weight (S, H, H), got {tuple(src.shape)},"
                         f" {tuple(tgt.shape)}, {tuple(weight.shape)}")
    if src.shape[1] == 0:
        return weight.sum() * 0.0
    with torch.autocast(device_type=src.device.type, enabled=False):
        weight = weight.float() if weight.dtype != torch.float64 else weight
        diff = src.to(weight.dtype) - mapped(tgt.to(weight.dtype), weight)
        return diff.pow(2).sum(dim=-1).mean(dim=1).mean()


@torch.no_grad()
def orthogonalise_(weight: torch.Tensor, beta: float) -> None:
    """In place, each (H, H) matrix W of `weight` (..., H, H) <- (1 + beta) W - beta W W^T W.

    The update of Wu & Dredze's `linear_loss` (after Conneau et al. 2018): a step towards the
    orthogonal matrices, taken before each loss; an orthogonal W is a fixed point.
    """
    weight.copy_((1 + beta) * weight - beta * weight @ (weight.transpose(-1, -2) @ weight))


class ProjectionHead(nn.Module):
    """Wu & Dredze's projection, as in the reference code: Linear(h,h)-ReLU-Linear(h,d), no biases.

    Used only for the contrastive loss; the task head reads the encoder's own states. Weights drawn
    from N(0, initializer_range), as the reference's transformers (4.18, `from_pretrained` with
    fast init) initialised the head's weights, absent from the checkpoint, with `_init_weights`.
    """

    def __init__(self, hidden_size: int, output_size: int, initializer_range: float = 0.02) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(hidden_size, hidden_size, bias=False),
            nn.ReLU(),
            nn.Linear(hidden_size, output_size, bias=False),
        )
        for layer in (self.layers[0], self.layers[2]):
            nn.init.normal_(layer.weight, mean=0.0, std=initializer_range)

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
    """Endless, seeded stream of realignment batches mixing all target languages (App. B.3), the
    reference's (`get_multilingual_realignment_dataset`, realignment_task.py).

    Each language's stream is its sentence pairs that hold at least one extracted word pair, in
    corpus order, buffer-shuffled with the trial's seed as the reference's
    `IterableDataset.shuffle(seed, buffer_size=10_000)` (HF datasets 2.4.0; every language with the
    same seed: `shuffle.shuffled_positions`). Languages are interleaved round-robin (languages
    sorted by name, `interleave_datasets`): draw k comes from language `langs[k % n]`, so each batch
    of 16 holds 3 or 4 pairs of each of 5 languages. The interleaved stream ends when the language
    whose turn it is has no sentence left (datasets' `CyclingMultiSourcesExamplesIterable`) and then
    starts over in the same order (the reference's `get_next_or_restart`; the shuffle's generator
    is copied before each pass). Draws 0..D-1 read only each language's first D / n + 10,000
    sentences (`shuffle.items_read`).

    The whole position is the number of sentence pairs drawn so far: `state_dict()` is small and
    goes into the trial's checkpoint; `load_state_dict()` resumes exactly. `restart()` starts the
    stream over, as the reference did at each epoch of joint training.
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
        self._streams = {lang: ShuffledStream(len(self._usable[lang]), seed) for lang in self.langs}
        # a corpus whose pairs cover its head only: the stream is the whole corpus's while it draws
        # fewer than head - SHUFFLE_BUFFER of its sentences (shuffle.items_read)
        self._head_limit = {lang: corpora[lang].head_paired - SHUFFLE_BUFFER for lang in self.langs
                            if getattr(corpora[lang], "head_paired", None) is not None}
        n_langs = len(self.langs)
        # draws in one pass: it ends at the first draw whose language has run out
        self.pass_length = min(n_langs * len(self._usable[lang]) + i for i, lang in enumerate(self.langs))

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

    def _draw(self, k: int) -> tuple[str, int]:
        """Language and position among its usable sentences of the k-th sentence pair of the stream."""
        k %= self.pass_length
        lang = self.langs[k % len(self.langs)]
        count = k // len(self.langs)
        if count >= self._head_limit.get(lang, count + 1):
            raise ValueError(f"realignment: the {lang} stream reached its sentence {count + 1}, past the"
                             f" {self._head_limit[lang]} that the extracted head of its corpus makes certain:"
                             " extract a longer head (min_paired)")
        return lang, self._streams[lang][count]

    def restart(self) -> None:
        """Start the stream over: the next batch is its first again."""
        self.drawn = 0

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
# A batch through an encoder


@dataclass
class EncodedRealignmentBatch:
    """A realignment batch tokenised, with its pairs as rows of the batch's word vectors.

    Rows 0..B-1 of `encoded` are the English sentences, rows B..2B-1 their translations. The W
    word vectors are the present word slots (sentence, word) in order, `word_slots` their flat
    slot indices; `pair_rows` (P, 2) the (English, target) rows of each kept pair and
    `pair_langs` (P,) the index in `langs` of its language.
    """

    encoded: EncodedWords
    n_sentence_pairs: int
    word_slots: torch.Tensor
    pair_rows: torch.Tensor
    pair_langs: torch.Tensor
    langs: list[str]


def encode_realignment_batch(
    batch: RealignmentBatch,
    tokenizer: PreTrainedTokenizerBase,
    settings: Settings,
    counts: dict[str, int] | None = None,
) -> EncodedRealignmentBatch:
    """Both sides of `batch` tokenised together; pairs whose word was truncated away dropped.

    Each sentence is truncated to `realign_max_length` subwords (96, the reference's
    scripts/2023_acl/controlled_realignment.py; each side alone, as its
    `AdaptAlignmentToTokenizerMapper`); XLM-R's lone "▁" pieces are deleted (as there;
    `keep_lone_prefix`) after taking their room (`lone_prefix_takes_room`). `counts`, if given,
    accumulates "pairs" (extracted pairs seen) and "pairs_dropped" (lost to the limit). All index arithmetic is on CPU, so that a step has no
    device-to-host synchronisation.
    """
    n_sentence_pairs = len(batch)
    encoded = encode_words(
        tokenizer, batch.en_words + batch.x_words, settings.realign_max_length, keep_lone_prefix=settings.keep_lone_prefix,
        lone_prefix_takes_room=settings.lone_prefix_takes_room,
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
    langs = sorted(set(batch.langs))
    sentence_lang = torch.tensor([langs.index(lang) for lang in batch.langs], dtype=torch.long)
    return EncodedRealignmentBatch(encoded, n_sentence_pairs, torch.nonzero(present).squeeze(1), pair_rows,
                                   sentence_lang[sentence[kept]], langs)


def _inputs(batch: EncodedRealignmentBatch, rows: slice) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in batch.encoded.inputs.items()}


def realigned_state(
    encoder: PreTrainedModel, batch: EncodedRealignmentBatch, settings: Settings, device: torch.device,
    rows: slice = slice(None),
) -> torch.Tensor:
    """Hidden state `realign_layer` (B, T, H) of `encoder` on the batch's `rows`, read through its
    model family; call it under `runtime.autocast`."""
    return model_family(encoder).hidden_state(encoder, _inputs(batch, rows), settings.realign_layer,
                                              "realign_layer", device)


def word_rows(hidden: torch.Tensor, batch: EncodedRealignmentBatch, device: torch.device) -> torch.Tensor:
    """The W word vectors of `hidden` (..., 2B, T, H): (..., W, H), first subword of each word."""
    words = pool_words(hidden, batch.encoded, WORD_POOLING)
    return words.reshape(*words.shape[:-3], -1, words.shape[-1]).index_select(-2, batch.word_slots.to(device))


def contrastive_step_loss(
    encoder: PreTrainedModel, head: nn.Module | None, batch: EncodedRealignmentBatch, settings: Settings,
    device: torch.device,
) -> torch.Tensor:
    """Eq. 2 for one encoded batch: both sides in one forward pass, words at `realign_layer`."""
    with autocast(settings, device):
        vectors = word_rows(realigned_state(encoder, batch, settings, device), batch, device)
        if head is not None:
            vectors = head(vectors)
    return realignment_loss(vectors, batch.pair_rows.to(device), settings.realign_temperature)


def realignment_step_loss(
    encoder: PreTrainedModel,
    head: nn.Module | None,
    batch: RealignmentBatch,
    tokenizer: PreTrainedTokenizerBase,
    settings: Settings,
    device: torch.device,
    counts: dict[str, int] | None = None,
) -> torch.Tensor:
    """Eq. 2 for one batch (`encode_realignment_batch`, then `contrastive_step_loss`)."""
    encoded = encode_realignment_batch(batch, tokenizer, settings, counts)
    return contrastive_step_loss(encoder, head, encoded, settings, device)


# --------------------------------------------------------------------------------------------
# Objectives: the loss of one batch, and the state it needs


class RealignObjective(nn.Module):
    """The loss of one encoded realignment batch through `encoder`. Its trainable parameters are
    optimised with the encoder's; `checkpoint()` is what the training checkpoint keeps of it."""

    def loss(self, encoder: PreTrainedModel, batch: EncodedRealignmentBatch, settings: Settings,
             device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def checkpoint(self) -> dict[str, Any]:
        return {"head": None}

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("head") is not None:
            raise ValueError("realignment checkpoint has a projection head, this run's objective has none")


class ContrastiveObjective(RealignObjective):
    """Eq. 2, with Wu & Dredze's projection head if `realign_projection`."""

    def __init__(self, head: nn.Module | None) -> None:
        super().__init__()
        self.head = head

    def loss(self, encoder: PreTrainedModel, batch: EncodedRealignmentBatch, settings: Settings,
             device: torch.device) -> torch.Tensor:
        return contrastive_step_loss(encoder, self.head, batch, settings, device)

    def checkpoint(self) -> dict[str, Any]:
        return {"head": self.head.state_dict() if self.head is not None else None}

    def restore(self, state: Mapping[str, Any]) -> None:
        if (state["head"] is None) != (self.head is None):
            raise ValueError("realignment checkpoint and this run disagree on setting realign_projection")
        if self.head is not None:
            self.head.load_state_dict(state["head"])


def contrastive_objective(model: PreTrainedModel, settings: Settings, seed: int) -> ContrastiveObjective:
    """The projection head (if `realign_projection`) is initialised from `seed` alone, without
    touching the global RNG, so building it does not shift dropout masks elsewhere."""
    head = None
    if settings.realign_projection:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = ProjectionHead(model.config.hidden_size, settings.realign_projection_dim,
                                  getattr(model.config, "initializer_range", 0.02))
    return ContrastiveObjective(head)


class L2Objective(RealignObjective):
    """Cao et al.'s L2 alignment with its source regulariser (module docstring).

    `original` is a frozen copy of the encoder as it is when the objective is built: the trial
    builds it from the freshly loaded pre-trained model, before any checkpoint is loaded, so it
    is the pre-trained encoder on a resumed run too. Not a submodule: neither trained nor saved.
    """

    def __init__(self, encoder: PreTrainedModel, source_weight: float = L2_SOURCE_WEIGHT) -> None:
        super().__init__()
        original = copy.deepcopy(encoder).eval()
        original.requires_grad_(False)
        object.__setattr__(self, "original", original)
        self.source_weight = source_weight

    def loss(self, encoder: PreTrainedModel, batch: EncodedRealignmentBatch, settings: Settings,
             device: torch.device) -> torch.Tensor:
        english = slice(0, batch.n_sentence_pairs)
        self.original.to(device)
        with autocast(settings, device):
            hidden = realigned_state(encoder, batch, settings, device)
            vectors = word_rows(hidden, batch, device)
            with torch.no_grad():
                original = realigned_state(self.original, batch, settings, device, english)
        pairs = batch.pair_rows.to(device)
        aligned = l2_alignment_loss(vectors[pairs[:, 0]], vectors[pairs[:, 1]])
        mask = batch.encoded.inputs["attention_mask"][english].to(device)
        return aligned + self.source_weight * source_regulariser(hidden[english], original, mask)


def l2_objective(model: PreTrainedModel, settings: Settings, seed: int) -> L2Objective:
    return L2Objective(model_family(model).encoder(model))


class LinearMapObjective(RealignObjective):
    """Wang et al.'s linear maps, trained on a frozen encoder (module docstring).

    The maps are the model's `LanguageMaps` (they outlive the realignment phase and are saved
    with the model); the encoder runs without gradients, so only the maps move.
    """

    def __init__(self, maps: "LanguageMaps", beta: float = ORTHOGONAL_BETA) -> None:
        super().__init__()
        object.__setattr__(self, "maps", maps)  # owned by the model, not by the objective
        self.beta = beta

    def trainable(self) -> list[nn.Parameter]:
        return [self.maps.weight]

    def loss(self, encoder: PreTrainedModel, batch: EncodedRealignmentBatch, settings: Settings,
             device: torch.device) -> torch.Tensor:
        if torch.is_grad_enabled():
            orthogonalise_(self.maps.weight, self.beta)
        with torch.no_grad(), autocast(settings, device):
            hidden = model_family(encoder).hidden_states(encoder, _inputs(batch, slice(None)), device)
        if hidden.shape[0] != self.maps.weight.shape[1]:
            raise ValueError(f"linear maps are for {self.maps.weight.shape[1]} hidden states, the encoder gives"
                             f" {hidden.shape[0]}")
        vectors = word_rows(hidden, batch, device)  # (S, W, H)
        pairs, pair_langs = batch.pair_rows.to(device), batch.pair_langs.to(device)
        src, tgt = vectors[:, pairs[:, 0]], vectors[:, pairs[:, 1]]
        # One term per language of the batch, each its own map's loss as in a one-language run of
        # Wu & Dredze's (their runs were per language pair); averaged over the languages.
        losses = [linear_mapping_loss(src[:, pair_langs == k], tgt[:, pair_langs == k],
                                      self.maps.weight[self.maps.index(lang)])
                  for k, lang in enumerate(batch.langs)]
        return torch.stack(losses).mean()


def linear_objective(model: PreTrainedModel, settings: Settings, seed: int) -> LinearMapObjective:
    return LinearMapObjective(language_maps(model))


# --------------------------------------------------------------------------------------------
# The realigner: batches + objective, as a zero-argument loss


class Realigner:
    """The realignment loss as a zero-argument callable, plus its resumable state.

    Holds the encoder (the model family's encoder under the task head, `model.base_model`), the method's
    objective and the batch stream. `parameters()` are the objective's, optimised with the
    model; `state_dict()` = the objective's part (the projection head, or None) + stream position,
    saved in the training checkpoint.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batches: RealignmentBatches,
        settings: Settings,
        device: torch.device,
        objective: RealignObjective,
    ) -> None:
        self.encoder, self.tokenizer, self.batches = encoder, tokenizer, batches
        self.settings, self.device = settings, device
        self.objective = objective.to(device)

    @property
    def head(self) -> nn.Module | None:
        return getattr(self.objective, "head", None)

    def __call__(self) -> torch.Tensor:
        batch = encode_realignment_batch(next(self.batches), self.tokenizer, self.settings)
        return self.objective.loss(self.encoder, batch, self.settings, self.device)

    def parameters(self) -> list[nn.Parameter]:
        return self.objective.trainable()

    def train(self, mode: bool = True) -> None:
        self.objective.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches.state_dict(), **self.objective.checkpoint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.objective.restore(state)


ObjectiveBuilder = Callable[[PreTrainedModel, Settings, int], RealignObjective]


def make_realigner(
    objective: ObjectiveBuilder,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpora: Mapping[str, "AlignedCorpus"],
    settings: Settings,
    seed: int,
    device: torch.device,
) -> Realigner:
    """A realigner on the encoder under the task head (the model family's, `model.base_model`), seeded by `seed`."""
    batches = RealignmentBatches(corpora, settings.realign_batch_size, seed)
    encoder = model_family(model).encoder(model)
    return Realigner(encoder, tokenizer, batches, settings, device, objective(model, settings, seed))


# The contrastive realigner of `before` and `joint` (Eq. 2): build_realigner(model, tokenizer,
# corpora, settings, seed, device).
build_realigner = functools.partial(make_realigner, contrastive_objective)


# --------------------------------------------------------------------------------------------
# Language maps: a model whose outputs depend on the input's language (`linear`)


class LanguageMaps(nn.Module):
    """One (H, H) map per target language and hidden state, applied to the encoder's outputs
    for an input of that language (inside `input_language`); identity maps at first.

    Registered on the task model (`model.language_maps`), so it is saved and loaded with the
    model's state; a forward hook on the encoder (`model.base_model`) maps `hidden_states` and
    `last_hidden_state` (and recomputes BERT's pooler from the mapped last state), so the task
    head and the alignment measurement both read mapped vectors. The maps are applied in fp32:
    identity maps change no value.
    """

    def __init__(self, langs: Sequence[str], n_states: int, hidden_size: int) -> None:
        super().__init__()
        self.langs = list(langs)
        eye = torch.eye(hidden_size).expand(len(self.langs), n_states, hidden_size, hidden_size)
        self.weight = nn.Parameter(eye.clone())
        self.language: str | None = None  # the input's language, set by `input_language`

    def index(self, lang: str) -> int:
        if lang not in self.langs:
            raise ValueError(f"no linear map for language {lang!r} (maps for {', '.join(self.langs)})")
        return self.langs.index(lang)

    def hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self.language not in self.langs:
            return output
        weight = self.weight[self.langs.index(self.language)]
        with torch.autocast(device_type=weight.device.type, enabled=False):
            states = output.hidden_states
            if states is not None:
                stacked = torch.stack(states)
                output["hidden_states"] = tuple(mapped(stacked.float(), weight.float()).to(stacked.dtype).unbind(0))
            last = output.last_hidden_state
            output["last_hidden_state"] = (last.float() @ weight[-1].float().T).to(last.dtype)
        pooler = getattr(module, "pooler", None)
        if getattr(output, "pooler_output", None) is not None and pooler is not None:
            output["pooler_output"] = pooler(output.last_hidden_state)
        return output


def install_language_maps(model: PreTrainedModel, settings: Settings) -> None:
    """Identity maps for `settings.langs` at every hidden state, and the hook that applies them.
    Done before any checkpoint is loaded (the maps are part of the model's state)."""
    if getattr(model, "language_maps", None) is not None:
        return
    family = model_family(model)
    maps = LanguageMaps(settings.langs, family.num_layers(model.config) + 1, model.config.hidden_size)
    model.add_module("language_maps", maps.to(next(model.parameters()).device))
    family.encoder(model).register_forward_hook(maps.hook)


def language_maps(model: PreTrainedModel) -> LanguageMaps:
    maps = getattr(model, "language_maps", None)
    if maps is None:
        raise ValueError("the linear objective needs the model's language maps (install_language_maps)")
    return maps


@contextlib.contextmanager
def input_language(model: nn.Module, lang: str | None) -> Iterator[None]:
    """Inputs given to `model` inside are in language `lang` (None: the source language). Only a
    model with language maps (`linear`) changes with it; for any other this does nothing."""
    maps = getattr(model, "language_maps", None)
    if not isinstance(maps, LanguageMaps):
        yield
        return
    previous, maps.language = maps.language, lang
    try:
        yield
    finally:
        maps.language = previous


# --------------------------------------------------------------------------------------------
# Methods

SCHEDULES = ("none", "before", "joint")


@dataclass(frozen=True)
class RealignMethod:
    """A realignment method: when it runs relative to fine-tuning (paper §6, App. A) and what it
    optimises. `objective(model, settings, seed)` builds the loss of one batch and its state;
    `prepare(model, settings)`, if any, changes the freshly loaded model before anything else
    (and before a checkpoint is loaded into it)."""

    name: str
    schedule: str  # "none", "before" (finetuning.realign_sequentially) or "joint" (Eq. 3)
    description: str
    objective: ObjectiveBuilder | None = None
    prepare: Callable[[PreTrainedModel, Settings], None] | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"realignment method {self.name!r}: schedule {self.schedule!r} not in {SCHEDULES}")
        if (self.schedule == "none") != (self.objective is None):
            raise ValueError(f"realignment method {self.name!r}: an objective is needed exactly when it realigns")

    @property
    def sequential(self) -> bool:
        """Realignment alone, before fine-tuning."""
        return self.schedule == "before"

    @property
    def joint(self) -> bool:
        """Realignment loss added at every fine-tuning optimizer step."""
        return self.schedule == "joint"

    def prepare_model(self, model: PreTrainedModel, settings: Settings) -> None:
        if self.prepare is not None:
            self.prepare(model, settings)

    def build_realigner(self, *args: Any, **kwargs: Any) -> Realigner:
        """`make_realigner` with this method's objective: (model, tokenizer, corpora, settings,
        seed, device)."""
        if self.objective is None:
            raise ValueError(f"realignment method {self.name!r} does not realign")
        return make_realigner(self.objective, *args, **kwargs)


REALIGN_METHODS: dict[str, RealignMethod] = {
    "none": RealignMethod("none", "none", "fine-tuning only (baseline)"),
    "before": RealignMethod(
        "before", "before", "Eq. 2 alone for realign_steps optimizer steps, then fine-tuning (sequential)",
        contrastive_objective,
    ),
    "joint": RealignMethod(
        "joint", "joint", "L = L_task + joint_weight * L_realign (Eq. 2) at every fine-tuning optimizer step (Eq. 3)",
        contrastive_objective,
    ),
    "l2": RealignMethod(
        "l2", "before", "Cao et al. 2020: squared L2 distance of the pairs + English kept near the pre-trained"
        " encoder, then fine-tuning", l2_objective,
    ),
    "linear": RealignMethod(
        "linear", "before", "Wang et al. 2019: per-language linear maps onto English on a frozen encoder,"
        " then fine-tuning with the maps applied to target-language inputs", linear_objective,
        prepare=install_language_maps,
    ),
}


def get_realign_method(name: str) -> RealignMethod:
    return lookup(REALIGN_METHODS, name, "realignment method")
