"""The toy world's tiny BERT: a WordPiece tokenizer learnt on the toy text, and a short pre-training.

The paper's encoders (mBERT, XLM-R, §4) are pre-trained with masked language modelling on
monolingual text of many languages, and their alignment between languages is a by-product of
that pre-training (§2): words of different languages that occur in the same contexts, shared
subwords, names and numbers anchor them (Conneau et al. 2020, "Emerging cross-lingual
structure"). A 2-layer model trained for a minute gets those contexts made explicit: its masked
language modelling reads the corpus's English sentences with each dictionary word switched, at
`code_switch_rate`, to its translation in a language drawn anew for every word
(`code_switched`), plus a share of translation pairs (TLM, Lample & Conneau 2019). As a word's
language cannot be told from such a context, nothing pushes the languages apart, and what still
differs between them is what the toy world made differ: Spanish and French share cognate
subwords with English, Arabic reorders its clauses and glues its article, Chinese writes one
ideograph a word. Measured on the demo's model (3,000 steps, 5,000 pieces; 200 dictionary
pairs of the toy corpus): strong en-x alignment at layers 0/1/2 of 0.37/0.37/0.27 for es,
0.32/0.32/0.24 fr, 0.32/0.36/0.31 ru, 0.14/0.13/0.07 ar and 0.12/0.13/0.07 zh. The same recipe with mostly monolingual text, or with a
small vocabulary whose pieces are shared by many words, left strong alignment near 0 outside
es. A short pre-training masks 30% of the tokens (BERT: 15%): twice the predictions a step.
It is done once (the folder is published with a manifest and reused).

The tokenizer's vocabulary is small enough (the tests' default) that some words split into
several subwords, so the first-subword logic of the pipeline is exercised; the demo's is large
enough to keep nearly every word whole, which its alignment needs.
"""
from __future__ import annotations

import heapq
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from toyworld.files import DATA_MANIFEST, TOY_CORPUS, publish
from toyworld.world import SOURCE_LANG
from trainables import formats

if TYPE_CHECKING:  # torch and transformers load lazily: writing toy data needs neither
    import torch
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

MODEL_MANIFEST = "toy-model.json"
MODEL_VERSION = 3  # bump when the saved weights change for the same parameters (3: mixed-language MLM)

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SUBWORD_PREFIX = "##"
DEFAULT_VOCAB_SIZE = 2000  # leaves about a third of the toy word types split into subwords
MAX_POSITIONS = 512  # any max_length the pipeline uses (96, 128...) fits
DEFAULT_PRETRAIN_STEPS = 150  # quick: the tests' model; the demo asks for more (experiments/demo.py)
DEFAULT_TLM_SHARE = 0.2  # share of pre-training sequences that are translation pairs
DEFAULT_CODE_SWITCH_RATE = 0.5  # share of dictionary words switched to a translation (`code_switched`)
MIXED_COPIES = 6  # mixed-language lines made of each English corpus sentence (fresh draws each)
PRETRAIN_BATCH_SIZE = 64
PRETRAIN_MAX_LENGTH = 64
PRETRAIN_THREADS = 1  # a tiny model gains nothing from threads (and stalls on busy CPUs);
# one thread also makes the saved weights independent of the machine's core count
PRETRAIN_LEARNING_RATE = 3e-3  # from-scratch tiny model: much higher than fine-tuning's 2e-5
MASK_PROBABILITY = 0.15  # BERT's masking recipe: 15% of tokens, 80% [MASK] / 10% random / 10% kept
PRETRAIN_MASK_PROBABILITY = 0.3  # the toy's short pre-training: twice BERT's predictions a step
MASK_TOKEN_SHARE = 0.8
RANDOM_TOKEN_SHARE = 0.1
IGNORE_LABEL = -100  # label value torch's cross-entropy ignores


def data_texts(data_dir: Path) -> Iterator[str]:
    """Every piece of running text in a toy data folder, read with the data module's readers
    (sorted paths: deterministic order). Words are joined by spaces: BERT's pre-tokeniser
    splits punctuation and ideographs anyway, so the words it sees are those of the text."""
    for path in sorted(Path(data_dir).rglob("*")):
        if not path.is_file() or path.name in (DATA_MANIFEST, MODEL_MANIFEST):
            continue
        if path.suffix == ".conllu":
            yield from (" ".join(s["words"]) for s in formats.read_conllu(path))
        elif path.parent.name == "wikiann":
            lang = path.stem.rsplit("-", 1)[-1]  # {split}-{lang}.tsv
            yield from (" ".join(s["words"]) for s in formats.read_token_tsv(path, lang))
        elif path.parent.name in ("mnli", "xnli"):
            yield from (f"{e['premise']} {e['hypothesis']}" for e in formats.read_nli_tsv(path))
        elif path.parent.name == "muse":
            yield from (f"{source} {target}" for source, target in formats.read_muse(path))
        elif path.suffix == f".{SOURCE_LANG}":  # parallel corpus: both sides, English once per file
            x_path = path.with_suffix("." + path.stem.split("-", 1)[1])
            for en, x in formats.read_line_aligned(path, x_path):
                yield en
                yield x


def parallel_corpora(data_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Language -> (English, other) sentence pairs of the toy corpus."""
    corpora = {}
    for english_file in sorted((Path(data_dir) / "parallel" / TOY_CORPUS).glob(f"en-*.{SOURCE_LANG}")):
        lang = english_file.stem[len("en-"):]
        corpora[lang] = formats.read_line_aligned(english_file, english_file.with_suffix(f".{lang}"))
    if not corpora:
        raise FileNotFoundError(f"{data_dir}/parallel/{TOY_CORPUS}: no en-x parallel files to pre-train on")
    return corpora


def parallel_pairs(data_dir: Path) -> list[tuple[str, str]]:
    """(English, other) sentence pairs of the toy corpus, every language in turn."""
    return [pair for pairs in parallel_corpora(data_dir).values() for pair in pairs]


def code_switched(data_dir: Path, rate: float, seed: int, copies: int = MIXED_COPIES) -> list[str]:
    """Mixed-language lines: each English sentence of the corpus `copies` times, each dictionary
    word switched with probability `rate` to its translation (through the folder's MUSE en-x
    files) in a language drawn for that word among the corpus's languages with an entry for it.

    Real multilingual corpora mix languages (names, borrowings, code-switching), and the shared
    contexts are what lets masked-LM pre-training align languages (Conneau et al. 2020); the
    toy corpus is far too small for that to happen by itself, so the mixing is explicit. A word's
    language is drawn anew for every word, so a context never tells which language a masked word
    is in: the embeddings get no language direction to keep translations apart (a line mixing
    English with one language only would: it tells the model which language to predict).
    """
    from trainables.segmentation import segment

    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"code_switched: rate={rate} must be between 0 and 1")
    if rate == 0.0:
        return []
    rng = random.Random(f"toy/{seed}/code-switch")
    corpora = parallel_corpora(data_dir)
    translations: dict[str, dict[str, list[str]]] = {}  # English word -> language -> its translations
    for lang in corpora:
        for word, translation in formats.read_muse(Path(data_dir) / "muse" / f"{SOURCE_LANG}-{lang}.txt"):
            translations.setdefault(word, {}).setdefault(lang, []).append(translation)
    english = list(dict.fromkeys(en for pairs in corpora.values() for en, _ in pairs))  # the same side for every language
    lines: list[str] = []
    for _ in range(copies):
        for sentence in english:
            words = segment(sentence, SOURCE_LANG)
            for i, word in enumerate(words):
                options = translations.get(word) or translations.get(word.lower())
                if options and rng.random() < rate:
                    words[i] = rng.choice(options[rng.choice(sorted(options))])
            lines.append(" ".join(words))
    return lines


def _word_counts(texts: Iterable[str], normalizer, pre_tokenizer) -> dict[str, int]:
    """How often each pre-tokenised word occurs, after BERT's normalisation."""
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    return counts


def learn_wordpiece_vocab(word_counts: dict[str, int], vocab_size: int) -> list[str]:
    """A WordPiece vocabulary by frequency-greedy merging, like the `tokenizers` trainer.

    Written here because the `tokenizers` WordPiece trainer breaks count ties in a per-process
    random order, so the same text gave a different vocabulary on every run. Here ties go to
    the lexicographically smallest pair: same words, same vocabulary. Words start as their
    characters, non-initial ones marked "##"; the most frequent adjacent pair is merged until
    the vocabulary (special tokens + alphabet + merges) reaches `vocab_size`.
    """
    words = [[word[0]] + [SUBWORD_PREFIX + c for c in word[1:]] for word in sorted(word_counts)]
    counts = [word_counts[word] for word in sorted(word_counts)]
    vocab = list(SPECIAL_TOKENS) + sorted({symbol for word in words for symbol in word})
    known = set(vocab)
    pair_counts: dict[tuple[str, str], int] = {}
    pair_words: dict[tuple[str, str], set[int]] = {}

    def count(index: int, sign: int) -> set[tuple[str, str]]:
        pairs = set(zip(words[index], words[index][1:]))
        for pair in zip(words[index], words[index][1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + sign * counts[index]
        for pair in pairs:
            pair_words.setdefault(pair, set()).add(index)
        return pairs

    for index in range(len(words)):
        count(index, +1)
    heap = [(-n, pair) for pair, n in pair_counts.items()]  # lazy max-heap: stale entries skipped
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if -negative != pair_counts.get(pair, 0) or -negative <= 0:
            continue
        merged = pair[0] + pair[1][len(SUBWORD_PREFIX):]
        changed: set[tuple[str, str]] = set()
        for index in sorted(pair_words.pop(pair)):
            changed |= count(index, -1)
            word, out, i = words[index], [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[index] = out
            changed |= count(index, +1)
        pair_counts.pop(pair, None)
        for other in sorted(changed - {pair}):
            if pair_counts.get(other, 0) > 0:
                heapq.heappush(heap, (-pair_counts[other], other))
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
    return vocab


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> "PreTrainedTokenizerFast":
    """A BERT WordPiece tokenizer (cased, accents kept, CJK split) trained on `texts`.

    Returns a transformers fast tokenizer (``BertTokenizer`` in transformers 5, an alias of
    ``BertTokenizerFast``), so word_ids() and text pairs work as with real BERT checkpoints.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    unk, pad, cls, sep, mask = "[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"
    # Multilingual BERT's normaliser: no lower-casing or accent stripping (es/fr/ru keep their
    # letters), spaces around CJK ideographs so each is a word.
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = learn_wordpiece_vocab(_word_counts(texts, normalizer, pre_tokenizer), vocab_size)
    tokenizer = Tokenizer(WordPiece({token: i for i, token in enumerate(vocab)}, unk_token=unk,
                                    continuing_subword_prefix=SUBWORD_PREFIX))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))])
    tokenizer.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX)
    return BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token=unk, pad_token=pad, cls_token=cls, sep_token=sep,
        mask_token=mask, do_lower_case=False, strip_accents=False, tokenize_chinese_chars=True,
        model_max_length=MAX_POSITIONS)


def mask_tokens(input_ids: "torch.Tensor", special_mask: "torch.Tensor", mask_id: int, vocab_size: int,
                generator: "torch.Generator", probability: float = MASK_PROBABILITY) -> tuple["torch.Tensor", "torch.Tensor"]:
    """BERT's masking (`probability` of the tokens, 15% by default: 80% [MASK], 10% random token,
    10% unchanged), vectorised. Returns the corrupted ids and the labels (original ids where
    chosen, else ignored)."""
    import torch

    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special_mask
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_LABEL))
    draw = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (draw < MASK_TOKEN_SHARE), torch.full_like(input_ids, mask_id), input_ids)
    use_random = chosen & (draw >= MASK_TOKEN_SHARE) & (draw < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
    return torch.where(use_random, random_ids, masked), labels


def pretrain(model: "BertForMaskedLM", tokenizer: "PreTrainedTokenizerFast", pairs: list[tuple[str, str]],
             steps: int, seed: int, tlm_share: float = DEFAULT_TLM_SHARE, mixed: list[str] = ()) -> list[float]:
    """Masked-LM pre-training (PRETRAIN_MASK_PROBABILITY of the tokens); returns the loss of every step.

    A share `tlm_share` of each batch is translation pairs in both orders (TLM: a masked word can
    be predicted from its translation); the rest is single sentences: the `mixed` lines of
    `code_switched` if any, else the corpus's monolingual sentences of every language.
    """
    import torch

    if not 0.0 <= tlm_share <= 1.0:
        raise ValueError(f"pretrain: tlm_share={tlm_share} must be between 0 and 1")
    if steps == 0:
        return []
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain_steps(model, tokenizer, pairs, list(mixed), steps, seed, tlm_share)
    finally:
        torch.set_num_threads(threads)


def masked_lm_loss(model: "BertForMaskedLM", inputs: dict, labels: "torch.Tensor") -> "torch.Tensor":
    """BertForMaskedLM's loss, with its output layer applied only where a token was masked.

    The model's own forward scores every position against the whole vocabulary and then ignores
    the unmasked ones (85% of them); in a model this narrow that output layer is most of a
    step's work. Same loss, about 2.8x faster steps with a 3,000-piece vocabulary."""
    import torch

    hidden = model.bert(**inputs).last_hidden_state
    chosen = labels != IGNORE_LABEL
    return torch.nn.functional.cross_entropy(model.cls(hidden[chosen]), labels[chosen])


def _encoded(tokenizer: "PreTrainedTokenizerFast", first: list[str], second: list[str] | None) -> dict:
    batch = tokenizer(first, second, truncation=True, max_length=PRETRAIN_MAX_LENGTH, padding="max_length",
                      return_tensors="pt", return_special_tokens_mask=True)
    return dict(batch)


def _pretrain_steps(model: "BertForMaskedLM", tokenizer: "PreTrainedTokenizerFast", pairs: list[tuple[str, str]],
                    mixed: list[str], steps: int, seed: int, tlm_share: float) -> list[float]:
    import torch

    english = list(dict.fromkeys(en for en, _ in pairs))  # the same English side for every language
    single = _encoded(tokenizer, mixed or english + [x for _, x in pairs], None)
    translations = _encoded(tokenizer, [a for a, _ in pairs] + [b for _, b in pairs],
                            [b for _, b in pairs] + [a for a, _ in pairs])
    n_tlm = round(PRETRAIN_BATCH_SIZE * tlm_share)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LEARNING_RATE)
    losses = []
    model.train()
    for _ in range(steps):
        rows_single = torch.randint(len(single["input_ids"]), (PRETRAIN_BATCH_SIZE - n_tlm,), generator=generator)
        rows_tlm = torch.randint(len(translations["input_ids"]), (n_tlm,), generator=generator)
        inputs = {key: torch.cat([single[key][rows_single], translations[key][rows_tlm]]) for key in single}
        width = int(inputs["attention_mask"].sum(1).max())  # trim padding columns
        inputs = {key: value[:, :width] for key, value in inputs.items()}
        special_mask = inputs.pop("special_tokens_mask").bool()
        inputs["input_ids"], labels = mask_tokens(inputs["input_ids"], special_mask, tokenizer.mask_token_id,
                                                  model.config.vocab_size, generator, PRETRAIN_MASK_PROBABILITY)
        loss = masked_lm_loss(model, inputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def write_toy_model(
    out_dir: Path,
    data_dir: Path,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
    tlm_share: float = DEFAULT_TLM_SHARE,
    code_switch_rate: float = DEFAULT_CODE_SWITCH_RATE,
) -> Path:
    """Write a tiny BERT (BertModel weights + fast WordPiece tokenizer) loadable offline with
    AutoModel / AutoModelFor*.from_pretrained(out_dir) and AutoTokenizer; return `out_dir`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"write_toy_model: data_dir {data_dir} does not exist (write_toy_data first)")
    if hidden_size % heads:
        raise ValueError(f"write_toy_model: hidden_size={hidden_size} is not a multiple of heads={heads}")
    if pretrain_steps < 0:
        raise ValueError(f"write_toy_model: pretrain_steps={pretrain_steps} must be at least 0")
    data_manifest = data_dir / DATA_MANIFEST
    manifest = json.dumps({
        "seed": seed, "hidden_size": hidden_size, "num_layers": num_layers, "heads": heads,
        "intermediate": intermediate, "vocab_size": vocab_size, "pretrain_steps": pretrain_steps,
        "tlm_share": tlm_share, "code_switch_rate": code_switch_rate, "version": MODEL_VERSION,
        "data": json.loads(data_manifest.read_text(encoding="utf-8")) if data_manifest.is_file() else None,
    }, indent=2, sort_keys=True) + "\n"

    def build(folder: Path) -> None:
        tokenizer = train_tokenizer(data_texts(data_dir), vocab_size)
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=heads, intermediate_size=intermediate,
            max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):  # seeded init and dropout, caller's RNG untouched
            torch.manual_seed(seed)
            pretrained = BertForMaskedLM(config)
            pretrain(pretrained, tokenizer, parallel_pairs(data_dir), pretrain_steps, seed, tlm_share,
                     code_switched(data_dir, code_switch_rate, seed))
            base = BertModel(config)  # with a (random) pooler, as AutoModel expects
        missing, unexpected = base.load_state_dict(pretrained.bert.state_dict(), strict=False)
        if unexpected or any(not key.startswith("pooler.") for key in missing):
            raise RuntimeError(f"toy model: MLM body and BertModel differ (missing {missing}, unexpected {unexpected})")
        base.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return publish(Path(out_dir), MODEL_MANIFEST, manifest, build)
