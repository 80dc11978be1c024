"""Benchmark 2: alignment measurement, against the forward passes it needs and a per-query loop.

2a. Overhead over the forward passes. `trainables.alignment.measure_alignment` on e5-small, dico
    pairs of NTREX (`trainables.pairs.extract_pairs`), 5 languages, every layer, both directions,
    strong and weak. Baseline: the bare forward passes over the same sentences, in the same
    batches: the time spent inside the model's `forward` during that very run (forward pre/post
    hooks), so both sides see the same machine state. Target: total <= 1.25 x forward.
    Pairs per language: 100 (not the paper's 1000), whole sentences as the reference samples them
    (~17 sentences per side and language; 1000 pairs need ~170); the overhead outside the
    forwards is per sentence (tokenising, pooling, the length check) plus a search that is
    negligible (2b).

2b. Search against a per-query loop, at the paper's scale: 1000 pairs per language, 5 languages,
    13 hidden states of width 384 (e5-small's shape), both directions, strong and weak. Ours:
    `trainables.alignment.alignment_accuracy` (batched cosine matrices). Baseline:
    `per_query_loop_accuracy` below, written for this benchmark in the reference code's style
    (for each query, one at a time, `F.cosine_similarity` to every candidate, then compare).
    The vectors are seeded synthetic stand-ins (translation = source + noise) so that the search
    runs at the full 1000 pairs without 7,700 forwards; timing does not depend on the values.
    The loop costs the same for every query (all candidates, every time), so it is timed on 10
    queries per layer and direction of one language and scaled to all 5 x 1000 (run in full it
    takes tens of minutes here).
    Both implementations must agree on a small case run in full (accuracies within 2 queries),
    else the benchmark fails loudly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

from benchmarks.common import Context, Row, Section, fmt_seconds

NAME = "alignment"
INPUTS = ("model", "data")  # e5-small and ../shared/data (benchmarks.common.check_inputs)
TARGET_OVERHEAD = 1.25  # the target: total time <= 1.25 x the forward passes alone
LANGS = ("ar", "es", "fr", "ru", "zh")
PAIR_SOURCE = "dico"
SEARCH_SEED = 0
# Synthetic translation noise per layer (std of the noise added to the source vector): rises with
# depth so that accuracies spread over (0, 1) instead of all being 0 or 1.
NOISE_LOW, NOISE_HIGH = 0.8, 1.6
AGREEMENT_TOLERANCE_QUERIES = 2  # float rounding may flip a near-tie: allow 2 queries per accuracy


@dataclass(frozen=True)
class Sizes:
    langs: tuple[str, ...]
    pairs: int  # per language, measured end to end (2a)
    parallel_subset: int | None  # NTREX lines per language the pairs are drawn from (None: all 1,997)
    search_pairs: int  # per language, search comparison (2b)
    search_langs: int
    search_layers: int  # hidden states 0..L
    search_width: int
    loop_queries: int  # queries per layer and direction the loop baseline is timed on
    loop_langs: int  # languages the loop baseline is timed on
    agreement_layers: int  # the small case on which both implementations must agree
    agreement_pairs: int


FULL = Sizes(langs=LANGS, pairs=100, parallel_subset=None, search_pairs=1000, search_langs=5, search_layers=13,
             search_width=384, loop_queries=10, loop_langs=1, agreement_layers=3, agreement_pairs=100)
SMOKE = Sizes(langs=("es", "fr"), pairs=8, parallel_subset=60, search_pairs=40, search_langs=2, search_layers=3,
              search_width=16, loop_queries=5, loop_langs=1, agreement_layers=2, agreement_pairs=20)


# --------------------------------------------------------------------------------------------
# The per-query baseline (reference-code style), written for this benchmark


def per_query_loop_accuracy(src: Any, tgt: Any, query_rows: Sequence[int] | None = None) -> dict[tuple[str, str], Any]:
    """BASELINE, reference-code style: one query at a time, cosine to every candidate.

    src, tgt: (L+1, N, H), pair i = (src[:, i], tgt[:, i]). For each layer, direction and query,
    the rule of `trainables.alignment` (the reference's): weak = the first most similar word of
    the other side is the translation; strong = the same over the other side's words then the
    query's own side's, the query's similarity to itself set to 0. `query_rows`: the queries to
    run (default: all N); candidates are always all N. Returns {(kind, direction): (L+1,)
    accuracy over those queries}.
    """
    import torch
    import torch.nn.functional as F

    n_layers, n_pairs, _ = src.shape
    rows = list(range(n_pairs)) if query_rows is None else list(query_rows)
    result: dict[tuple[str, str], Any] = {}
    for direction, (queries, translations) in {"en-x": (src, tgt), "x-en": (tgt, src)}.items():
        weak_accuracy = torch.zeros(n_layers)
        strong_accuracy = torch.zeros(n_layers)
        for layer in range(n_layers):
            weak_hits = strong_hits = 0
            for i in rows:
                query = queries[layer, i].unsqueeze(0)
                to_other_side = F.cosine_similarity(query, translations[layer], dim=-1)
                to_own_side = F.cosine_similarity(query, queries[layer], dim=-1)
                to_own_side[i] = 0.0  # the reference's value for the query itself
                weak_hits += int(torch.argmax(to_other_side)) == i  # argmax: the first maximum
                strong_hits += int(torch.argmax(torch.cat([to_other_side, to_own_side]))) == i
            weak_accuracy[layer] = weak_hits / len(rows)
            strong_accuracy[layer] = strong_hits / len(rows)
        result[("weak", direction)] = weak_accuracy
        result[("strong", direction)] = strong_accuracy
    return result


def synthetic_vectors(layers: int, pairs: int, width: int, seed: int) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    src = torch.randn((layers, pairs, width), generator=generator)
    noise = torch.linspace(NOISE_LOW, NOISE_HIGH, layers).view(-1, 1, 1)
    tgt = src + noise * torch.randn((layers, pairs, width), generator=generator)
    return src, tgt


def check_agreement(sizes: Sizes) -> float:
    """Largest accuracy difference between ours and the full per-query loop on a small case."""
    from trainables.alignment import alignment_accuracy

    src, tgt = synthetic_vectors(sizes.agreement_layers, sizes.agreement_pairs, sizes.search_width, SEARCH_SEED)
    ours, loop = alignment_accuracy(src, tgt), per_query_loop_accuracy(src, tgt)
    worst = max(float((values.cpu() - loop[key]).abs().max()) for key, values in ours.items())
    tolerance = AGREEMENT_TOLERANCE_QUERIES / sizes.agreement_pairs
    if worst > tolerance:
        raise RuntimeError(f"alignment benchmark: per-query baseline and alignment_accuracy disagree by {worst:.4f}"
                           f" (> {tolerance:.4f}): the baseline is not computing the same thing")
    return worst


def compare_search(sizes: Sizes) -> dict[str, Any]:
    """Ours over every language in full; the loop over `loop_queries` queries per layer and direction
    of `loop_langs` languages, against the full candidate sets, scaled to every query of every
    language (each query costs the same: all candidates, every time)."""
    from trainables.alignment import alignment_accuracy

    ours_s = loop_sample_s = 0.0
    for lang_index in range(sizes.search_langs):
        src, tgt = synthetic_vectors(sizes.search_layers, sizes.search_pairs, sizes.search_width,
                                     SEARCH_SEED + 1 + lang_index)
        start = time.perf_counter()
        alignment_accuracy(src, tgt)
        ours_s += time.perf_counter() - start
        if lang_index < sizes.loop_langs:
            step = max(1, sizes.search_pairs // sizes.loop_queries)
            sample = range(0, sizes.search_pairs, step)[: sizes.loop_queries]
            start = time.perf_counter()
            per_query_loop_accuracy(src, tgt, sample)
            loop_sample_s += time.perf_counter() - start
    queries_timed = min(sizes.loop_queries, sizes.search_pairs) * min(sizes.loop_langs, sizes.search_langs)
    scale = sizes.search_pairs * sizes.search_langs / queries_timed
    return {"ours_seconds": ours_s, "loop_seconds": loop_sample_s * scale, "loop_sampled_seconds": loop_sample_s,
            "loop_scale": scale, "max_accuracy_difference": check_agreement(sizes)}


# --------------------------------------------------------------------------------------------
# End to end


class ForwardClock:
    """Forward pre/post hooks: wall time spent inside the model's forward calls."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._started = 0.0
        self.handles = [model.register_forward_pre_hook(self._start),
                        model.register_forward_hook(self._stop)]

    def _start(self, module: Any, args: Any) -> None:
        self._started = time.perf_counter()

    def _stop(self, module: Any, args: Any, output: Any) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += 1

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure_end_to_end(context: Context, sizes: Sizes) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from trainables import alignment
    from trainables.data import Subset
    from trainables.pairs import extract_pairs
    from trainables.settings import Settings

    cache = context.scratch("cache")
    subset = Subset(sizes.parallel_subset)
    corpora = {lang: extract_pairs(context.corpus, lang, PAIR_SOURCE, context.data_dir, cache, subset)
               for lang in sizes.langs}
    settings = replace(Settings(), align_pairs=sizes.pairs, device="cpu", precision="fp32", langs=sizes.langs)
    tokenizer = AutoTokenizer.from_pretrained(str(context.model))
    model = AutoModel.from_pretrained(str(context.model)).eval()

    search_seconds = 0.0
    original_search = alignment.alignment_accuracy

    def timed_search(*args: Any, **kwargs: Any) -> Any:
        nonlocal search_seconds
        start = time.perf_counter()
        try:
            return original_search(*args, **kwargs)
        finally:
            search_seconds += time.perf_counter() - start

    clock = ForwardClock(model)
    alignment.alignment_accuracy = timed_search  # measure_alignment looks it up in its module
    try:
        start = time.perf_counter()
        table = alignment.measure_alignment(model, tokenizer, corpora, settings)
        total = time.perf_counter() - start
    finally:
        alignment.alignment_accuracy = original_search
        clock.close()
    n_layers = model.config.num_hidden_layers + 1
    expected_rows = len(sizes.langs) * 2 * 2 * n_layers
    if len(table) != expected_rows:
        raise RuntimeError(f"alignment benchmark: {len(table)} result rows, expected {expected_rows}")
    sentences = {lang: int(alignment.sample_pairs(corpora[lang].pairs, sizes.pairs, settings.align_seed,
                                                  settings.align_sampling)["sentence"].nunique())
                 for lang in sizes.langs}
    return {"total_seconds": total, "forward_seconds": clock.seconds, "forward_calls": clock.calls,
            "search_seconds": search_seconds, "pairs_used": table.groupby("lang")["n_pairs"].first().to_dict(),
            "sentences_per_side": sentences, "torch_threads": torch.get_num_threads()}


def run(context: Context) -> Section:
    sizes = SMOKE if context.smoke else FULL
    end_to_end = measure_end_to_end(context, sizes)
    search = compare_search(sizes)
    overhead = end_to_end["total_seconds"] / end_to_end["forward_seconds"]
    speedup = search["loop_seconds"] / search["ours_seconds"]
    rows = [
        Row("2a. alignment total / forward passes", fmt_seconds(end_to_end["total_seconds"]),
            fmt_seconds(end_to_end["forward_seconds"]), overhead, f"<= {TARGET_OVERHEAD}",
            overhead <= TARGET_OVERHEAD,
            f"{context.model_label}, {len(sizes.langs)} langs x {sizes.pairs} {PAIR_SOURCE} pairs ({context.corpus}),"
            " all layers, both directions, strong+weak; baseline = time inside model.forward in the same run"),
        Row("2b. alignment search: per-query loop / ours", fmt_seconds(search["ours_seconds"]),
            fmt_seconds(search["loop_seconds"]), speedup, "info (speed-up)", None,
            f"{sizes.search_langs} langs x {sizes.search_pairs} pairs x {sizes.search_layers} layers x"
            f" {sizes.search_width} dims, synthetic vectors; baseline = benchmarks.alignment_speed."
            f"per_query_loop_accuracy, timed on {sizes.loop_queries} queries per layer and direction of"
            f" {sizes.loop_langs} lang, x{search['loop_scale']:.0f}"),
    ]
    return Section(NAME, rows, details={"sizes": sizes.__dict__, "end_to_end": end_to_end, "search": search})
