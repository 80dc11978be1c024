"""The paper's tables from small tidy tables with known structure: rank orders built so that
Spearman's rho is known by hand, scores with known means and stds, and missing cells."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import results, tables
from analysis.render import MISSING, to_latex, to_markdown
from analysis.stats import BootstrapSettings, seed_statistics, spearman_bca_interval
from analysis.tables import AnalysisSettings

FAST = AnalysisSettings(bootstrap=BootstrapSettings(n_resamples=300, seed=3))

# --------------------------------------------------------------------------------------------
# Correlation fixture: 2 models x 2 languages x 3 seeds = 12 points per correlation.
# --------------------------------------------------------------------------------------------
LAYERS = {"m-small": 2, "m-big": 3}
LANGS = ("ar", "fr")
SEEDS = (0, 1, 2)
N_POINTS = len(LAYERS) * len(LANGS) * len(SEEDS)
# A permutation of 0..11 with sum of squared rank differences n(n^2-1)/6 = 286: rho exactly 0.
ZERO_RHO_PERMUTATION = [4, 9, 5, 1, 7, 8, 6, 3, 11, 2, 0, 10]
# Two neighbours swapped: sum d^2 = 2, rho = 1 - 6*2 / (12 * 143).
ONE_SWAP_PERMUTATION = [1, 0, *range(2, 12)]
ONE_SWAP_RHO = 1 - 6 * 2 / (N_POINTS * (N_POINTS**2 - 1))


def _point_index(model: str, lang: str, seed: int) -> int:
    return (list(LAYERS).index(model) * len(LANGS) + LANGS.index(lang)) * len(SEEDS) + SEEDS.index(seed)


def correlation_trials(task: str = "udpos") -> pd.DataFrame:
    """CTL rises with the point index k. At the last layer: strong before rises with k (rho 1),
    weak before falls (rho -1), strong after follows ZERO_RHO_PERMUTATION (rho 0), weak after
    ONE_SWAP_PERMUTATION. Penultimate layer: strong before falls with k (rho -1), everything
    else rises (rho 1). x-en copies en-x."""
    rows = []
    for model, n_layers in LAYERS.items():
        for seed in SEEDS:
            row = dict(model=model, task=task, realign="none", pairs="dico", corpus="opus100", seed=seed,
                       num_layers=n_layers)
            for lang in LANGS:
                k = _point_index(model, lang, seed)
                row[f"ctl/{lang}"] = -0.5 + 0.03 * k
                for layer in range(n_layers + 1):
                    depth = n_layers - layer
                    values = {("pretrained", "strong"): k, ("pretrained", "weak"): k,
                              ("finetuned", "strong"): k, ("finetuned", "weak"): k}
                    if depth == 0:
                        values[("pretrained", "weak")] = -k
                        values[("finetuned", "strong")] = ZERO_RHO_PERMUTATION[k]
                        values[("finetuned", "weak")] = ONE_SWAP_PERMUTATION[k]
                    elif depth == 1:
                        values[("pretrained", "strong")] = -k
                    for (stage, kind), rank in values.items():
                        for direction in ("en-x", "x-en"):
                            row[f"align/{stage}/{kind}/{direction}/{lang}/{layer}"] = 0.5 + 0.02 * rank
            rows.append(row)
    return results.tidy(pd.DataFrame(rows), "fixture")


def _cell(frame: pd.DataFrame, **keys) -> pd.Series:
    mask = np.ones(len(frame), dtype=bool)
    for key, value in keys.items():
        mask &= (frame[key] == value).to_numpy()
    assert mask.sum() == 1, keys
    return frame[mask].iloc[0]


def test_table2_known_rank_orders():
    frame = tables.table2(correlation_trials(), FAST)
    cell = lambda **k: _cell(frame, task="udpos", direction="en-x", **k)  # noqa: E731
    assert cell(layer="last", kind="strong", stage="before")["rho"] == pytest.approx(1.0)
    assert cell(layer="last", kind="weak", stage="before")["rho"] == pytest.approx(-1.0)
    assert cell(layer="last", kind="strong", stage="after")["rho"] == pytest.approx(0.0, abs=1e-12)
    assert cell(layer="last", kind="weak", stage="after")["rho"] == pytest.approx(ONE_SWAP_RHO)
    assert cell(layer="penult", kind="strong", stage="before")["rho"] == pytest.approx(-1.0)
    assert cell(layer="penult", kind="weak", stage="after")["rho"] == pytest.approx(1.0)
    assert set(frame.loc[frame["task"] == "udpos", "n"]) == {N_POINTS}
    # rho = 0 has p = 1: the only non-significant cell of the task.
    not_significant = frame[(frame["task"] == "udpos") & ~frame["significant"]]
    assert list(zip(not_significant["layer"], not_significant["kind"], not_significant["stage"])) == [("last", "strong", "after")]
    assert cell(layer="last", kind="strong", stage="after")["p"] == pytest.approx(1.0)


def test_table2_reports_missing_tasks_and_marks_non_significant_cells():
    frame = tables.table2(correlation_trials(), FAST)
    # NER and NLI were not run: their 2 layers x 2 kinds x 2 stages cells are missing.
    missing = frame[frame["status"] == MISSING]
    assert set(missing["task"]) == {"wikiann", "xnli"} and len(missing) == 16
    grid = tables.render("table2", frame, FAST)
    markdown = to_markdown(grid, "Table 2")
    assert "| POS | last | -1.00 | 0.99 | 1.00 | 0.00 † |" in markdown
    assert "| NER | last | missing | missing | missing | missing |" in markdown
    assert "16 correlation cell(s) missing" in markdown
    assert "\\cellcolor{gray!30}0.00" in to_latex(grid, "Table 2", "table2")


def test_table9_intervals_equal_scipy_bca():
    trials = correlation_trials()
    settings = AnalysisSettings(bootstrap=BootstrapSettings(n_resamples=500, seed=11))
    frame = tables.table9(trials, settings)
    row = _cell(frame, task="udpos", layer="last", direction="x-en", stage="after")
    # The same points in the analysis' fixed order (model, language, seed), through scipy
    # directly with its own (non-vectorised) spearmanr.
    k = np.array([_point_index(m, l, s) for m, l, s in sorted(itertools.product(LAYERS, LANGS, SEEDS))])
    x = 0.5 + 0.02 * np.array(ZERO_RHO_PERMUTATION)[k]
    ctl = -0.5 + 0.03 * k
    reference = stats.bootstrap(
        (x, ctl), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
        method="BCa", n_resamples=500, confidence_level=0.95, rng=np.random.default_rng(11),
    )
    assert row["ci_low"] == pytest.approx(reference.confidence_interval.low, abs=1e-12)
    assert row["ci_high"] == pytest.approx(reference.confidence_interval.high, abs=1e-12)
    assert row["ci_low"] < 0 < row["ci_high"]


def test_intervals_do_not_depend_on_trial_order():
    trials = correlation_trials()
    shuffled = trials.sample(frac=1.0, random_state=4).reset_index(drop=True)
    a = tables.table9(trials, FAST)
    b = tables.table9(shuffled, FAST)
    pd.testing.assert_frame_equal(a, b)


def test_bca_interval_equals_scipy_on_noisy_data_with_ties():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=40), 1)  # rounding creates ties
    y = x + rng.normal(size=40)
    ours = spearman_bca_interval(x, y, BootstrapSettings(n_resamples=2000, confidence_level=0.9, seed=2))
    reference = stats.bootstrap(
        (x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False, method="BCa",
        n_resamples=2000, confidence_level=0.9, rng=np.random.default_rng(2),
    )
    assert ours == pytest.approx((reference.confidence_interval.low, reference.confidence_interval.high), abs=1e-12)


def test_bca_interval_is_nan_for_degenerate_data():
    assert np.isnan(spearman_bca_interval(np.ones(10), np.arange(10.0))).all()
    assert np.isnan(spearman_bca_interval(np.arange(2.0), np.arange(2.0))).all()


def test_table8_has_both_directions_for_weak_alignment():
    frame = tables.table8(correlation_trials(), FAST)
    udpos = frame[frame["task"] == "udpos"]
    assert set(udpos["kind"]) == {"weak"}
    assert set(udpos["direction"]) == {"en-x", "x-en"}
    # x-en copies en-x in the fixture: equal rho.
    for (layer, stage), group in udpos.groupby(["layer", "stage"]):
        assert group["rho"].nunique() == 1
    assert _cell(udpos, layer="last", direction="en-x", stage="before")["rho"] == pytest.approx(-1.0)


def test_tables_11_and_12_count_depth_from_the_last_layer():
    trials = correlation_trials()
    t11 = tables.table11(trials, FAST)
    # m-small has layers 0..2 (depths 0..2), m-big 0..3; 2 stages each.
    assert len(t11[t11["model"] == "m-small"]) == 3 * 2 and len(t11[t11["model"] == "m-big"]) == 4 * 2
    assert list(t11.loc[(t11["model"] == "m-big") & (t11["stage"] == "before"), "layer"]) == ["last", "-1", "-2", "-3"]
    # Per model: 2 languages x 3 seeds = 6 points; the rank orders hold within each model.
    small = t11[t11["model"] == "m-small"]
    assert set(small["n"]) == {6}
    assert _cell(small, depth=0, stage="before")["rho"] == pytest.approx(1.0)
    assert _cell(small, depth=1, stage="before")["rho"] == pytest.approx(-1.0)
    # A perfect correlation has a degenerate bootstrap distribution: scipy's BCa gives NaN.
    imperfect = small[small["rho"].abs() < 1]
    assert len(imperfect) and np.isfinite(imperfect[["ci_low", "ci_high"]].to_numpy()).all()
    assert (imperfect["ci_low"] <= imperfect["rho"]).all() and (imperfect["rho"] <= imperfect["ci_high"]).all()
    perfect = small[small["rho"].abs() == 1]
    assert len(perfect) and perfect["ci_low"].isna().all()
    t12 = tables.table12(trials, FAST)
    assert "ci_low" not in t12.columns
    markdown = to_markdown(tables.render("table12", t12, FAST), "Table 12")
    # m-small has no layer -3: shown as not applicable, not as missing.
    assert "|  | -3 | 1.00 | 1.00 | - | - |" in markdown  # models not in the paper: alphabetical


# --------------------------------------------------------------------------------------------
# Tables 3 and 10: relative change of strong en-x alignment at the last layer.
# --------------------------------------------------------------------------------------------
def alignment_change_trials() -> pd.DataFrame:
    """Model m (2 layers), POS. ar: before 0.2, after 0.1 (seed 0) and 0.3 (seed 1) -> changes
    -0.5, +0.5. es: before 0.4, after 0.6 for both seeds -> +0.5, +0.5. ru: before 0 for seed 0
    (undefined), 0.1 -> 0.05 for seed 1 -> -0.5 only. fr: a single seed, 0.5 -> 0.25."""
    rows = []
    plan = {
        0: {"ar": (0.2, 0.1), "es": (0.4, 0.6), "ru": (0.0, 0.3), "fr": (0.5, 0.25)},
        1: {"ar": (0.2, 0.3), "es": (0.4, 0.6), "ru": (0.1, 0.05)},
    }
    for seed, langs in plan.items():
        row = dict(model="m", task="udpos", realign="none", pairs="dico", corpus="opus100", seed=seed, num_layers=2)
        for lang, (before, after) in langs.items():
            row[f"ctl/{lang}"] = -0.1
            for stage, value in (("pretrained", before), ("finetuned", after)):
                row[f"align/{stage}/strong/en-x/{lang}/2"] = value
                row[f"align/{stage}/strong/en-x/{lang}/1"] = 0.9  # not the last layer: ignored
        rows.append(row)
    return results.tidy(pd.DataFrame(rows), "fixture")


def test_table10_mean_and_std_over_seeds():
    frame = tables.table10(alignment_change_trials(), FAST)
    ar = _cell(frame, task="udpos", model="m", lang="ar")
    assert ar["mean"] == pytest.approx(0.0) and ar["std"] == pytest.approx(0.5)  # population std, as the paper
    es = _cell(frame, task="udpos", model="m", lang="es")
    assert es["mean"] == pytest.approx(0.5) and es["std"] == pytest.approx(0.0)
    ru = _cell(frame, task="udpos", model="m", lang="ru")
    assert ru["mean"] == pytest.approx(-0.5) and ru["n_seeds"] == 1 and ru["n_zero_before"] == 1
    assert np.isnan(ru["std"])
    fr = _cell(frame, task="udpos", model="m", lang="fr")
    assert fr["mean"] == pytest.approx(-0.5) and np.isnan(fr["std"])
    notes = " ".join(frame.attrs["notes"])
    assert "alignment 0 before fine-tuning" in notes and "single seed" in notes
    markdown = to_markdown(tables.render("table10", frame, FAST), "Table 10")
    assert "| POS | m | 0.00 ± 0.50 | 0.50 ± 0.00 | -0.50 ± n/a | -0.50 ± n/a |" in markdown
    assert "| NER | m | missing | missing | missing | missing |" in markdown


def test_table3_keeps_the_papers_three_languages():
    frame = tables.table3(alignment_change_trials(), FAST)
    assert sorted(frame["lang"].unique()) == ["ar", "es", "ru"]
    markdown = to_markdown(tables.render("table3", frame, FAST), "Table 3")
    assert "| task | model | en-ar | en-es | en-ru |" in markdown
    assert "| POS | m | 0.00 | 0.50 | -0.50 |" in markdown


# --------------------------------------------------------------------------------------------
# Controlled experiment: known means, stds and marks.
# --------------------------------------------------------------------------------------------
def controlled_trials() -> pd.DataFrame:
    """Model A on POS, 2 seeds, languages ar and fr, English 0.9.
    Baseline: ar 0.50 / 0.52 (mean 51.0, std 1.0), fr 0.80 / 0.80 (80.0, std 0).
    before dico: ar 0.515 / 0.52 (51.75: within the std -> light), fr 0.82 / 0.84.
    joint dico: ar 0.48 / 0.49 (48.5: below baseline - std -> dark), fr 0.80 / 0.80.
    before fastalign: ar 0.55 / 0.56 (55.5: above -> no mark), fr 0.79 / 0.79 (below, std 0 -> dark).
    Model B: baseline with one seed (ar 0.6, fr 0.7), before dico one seed; no joint (missing)."""
    plan = [
        ("A", "none", "dico", 0, 0.50, 0.80), ("A", "none", "dico", 1, 0.52, 0.80),
        ("A", "before", "dico", 0, 0.515, 0.82), ("A", "before", "dico", 1, 0.52, 0.84),
        ("A", "joint", "dico", 0, 0.48, 0.80), ("A", "joint", "dico", 1, 0.49, 0.80),
        ("A", "before", "fastalign", 0, 0.55, 0.79), ("A", "before", "fastalign", 1, 0.56, 0.79),
        ("B", "none", "dico", 0, 0.60, 0.70), ("B", "before", "dico", 0, 0.62, 0.72),
    ]
    rows = [
        {"model": m, "task": "udpos", "realign": r, "pairs": p, "corpus": "opus100", "seed": s,
         "score/en": 0.9, "score/ar": ar, "score/fr": fr}
        for m, r, p, s, ar, fr in plan
    ]
    return results.tidy(pd.DataFrame(rows), "fixture")


def test_extra_controlled_tables_come_in_the_same_order_whatever_the_trials_order():
    trials = controlled_trials()
    other_task = trials.assign(task="wikiann")
    frames = [pd.concat([trials, other_task]).assign(corpus="toy"),
              pd.concat([other_task, trials]).assign(corpus="toy")]
    names = [list(tables.extra_controlled_specs(tables._context(frame, FAST))) for frame in frames]
    assert names[0] == names[1] == ["controlled_udpos_toy", "controlled_wikiann_toy"]


def test_controlled_table_means_stds_and_marks():
    frame = tables.controlled_table(controlled_trials(), "udpos", "opus100", FAST)
    a = frame[frame["model"] == "A"]
    base = _cell(a, realign="none", lang="ar")
    assert base["mean"] == pytest.approx(51.0) and base["std"] == pytest.approx(1.0) and base["mark"] == ""
    light = _cell(a, realign="before", pairs="dico", lang="ar")
    assert light["mean"] == pytest.approx(51.75) and light["diff"] == pytest.approx(0.75) and light["mark"] == "light"
    dark = _cell(a, realign="joint", pairs="dico", lang="ar")
    assert dark["mean"] == pytest.approx(48.5) and dark["mark"] == "dark"
    gain = _cell(a, realign="before", pairs="fastalign", lang="ar")
    assert gain["mean"] == pytest.approx(55.5) and gain["std"] == pytest.approx(0.5) and gain["mark"] == ""
    assert _cell(a, realign="before", pairs="fastalign", lang="fr")["mark"] == "dark"
    assert _cell(a, realign="joint", pairs="dico", lang="fr")["mark"] == "light"  # equal to the baseline
    assert _cell(a, realign="none", lang="en")["mean"] == pytest.approx(90.0)
    # Rows: A's baseline then the paper's method order; B lacks 'joint dico' and 'before fastalign'.
    rows = list(dict.fromkeys(zip(frame["model"], frame["realign"], frame["pairs"])))
    assert rows == [
        ("A", "none", ""), ("A", "before", "fastalign"), ("A", "before", "dico"), ("A", "joint", "dico"),
        ("B", "none", ""), ("B", "before", "fastalign"), ("B", "before", "dico"), ("B", "joint", "dico"),
    ]
    b_joint = _cell(frame, model="B", realign="joint", pairs="dico", lang="ar")
    assert b_joint["status"] == MISSING and np.isnan(b_joint["mean"])
    b_before = _cell(frame, model="B", realign="before", pairs="dico", lang="ar")
    # B's baseline has one seed: std NaN, so no mark.
    assert np.isnan(b_before["baseline_std"]) and b_before["mark"] == ""


def test_controlled_table_rendering_marks_and_missing():
    frame = tables.controlled_table(controlled_trials(), "udpos", "opus100", FAST)
    grid = tables.render("table13", frame, FAST)
    markdown = to_markdown(grid, "Table 13")
    assert "| A | 90.0 ± 0.0 | 51.0 ± 1.0 | 80.0 ± 0.0 |" in markdown
    # std of 51.5 and 52.0 is 0.25, printed with one decimal (round half to even) as 0.2.
    assert "| + before dico | 90.0 ± 0.0 ° | 51.8 ± 0.2 ° | 83.0 ± 1.0 |" in markdown
    assert "| + joint dico | 90.0 ± 0.0 ° | 48.5 ± 0.5 ▼ | 80.0 ± 0.0 ° |" in markdown
    assert "| B | 90.0 ± n/a | 60.0 ± n/a | 70.0 ± n/a |" in markdown
    assert "| + joint dico | missing | missing | missing |" in markdown
    latex = to_latex(grid, "Table 13", "table13")
    assert "\\cellcolor{gray!80}48.5 $\\pm$ 0.5" in latex
    assert "\\cellcolor{gray!30}51.8 $\\pm$ 0.2" in latex


def test_table4_averages_target_languages_per_trial():
    frame = tables.table4(controlled_trials(), FAST)
    # Baseline A: per-seed averages (50+80)/2 = 65.0 and (52+80)/2 = 66.0 -> mean 65.5, std 0.5.
    base = _cell(frame, model="A", realign="none", task="udpos")
    assert base["lang"] == tables.AVERAGE_LANGUAGE
    assert base["mean"] == pytest.approx(65.5) and base["std"] == pytest.approx(0.5)
    before = _cell(frame, model="A", realign="before", task="udpos")  # (51.5+82)/2, (52+84)/2
    assert before["mean"] == pytest.approx((66.75 + 68.0) / 2) and before["mark"] == ""
    joint = _cell(frame, model="A", realign="joint", task="udpos")  # 64.0, 64.5 -> 64.25
    assert joint["mean"] == pytest.approx(64.25) and joint["mark"] == "dark"
    # NER / NLI were not run: their cells are missing, not dropped.
    assert _cell(frame, model="A", realign="none", task="wikiann")["status"] == MISSING
    markdown = to_markdown(tables.render("table4", frame, FAST), "Table 4")
    assert "| A | 65.5 | missing | missing |" in markdown
    assert "| + joint | 64.2 ▼ | missing | missing |" in markdown or "| + joint | 64.3 ▼ | missing | missing |" in markdown


def test_table6_lists_every_pair_source_and_table5_every_language():
    t6 = tables.table6(controlled_trials(), FAST)
    methods = list(dict.fromkeys(zip(t6.loc[t6["model"] == "A", "realign"], t6.loc[t6["model"] == "A", "pairs"])))
    assert methods == [("none", ""), ("before", "fastalign"), ("before", "dico"), ("joint", "dico")]
    t5 = tables.table5(controlled_trials(), FAST)
    assert list(dict.fromkeys(t5["lang"])) == ["ar", "fr"]
    assert _cell(t5, model="A", realign="before", lang="fr")["mean"] == pytest.approx(83.0)


def test_baseline_shared_across_corpora_counts_each_seed_once():
    trials = controlled_trials()
    # The same baseline runs listed again under another corpus must not change the std.
    duplicate = trials[trials["realign"] == "none"].assign(corpus="multiun")
    both = results.tidy(pd.concat([trials, duplicate], ignore_index=True), "fixture")
    frame = tables.controlled_table(both, "udpos", "opus100", FAST)
    base = _cell(frame, model="A", realign="none", lang="ar")
    assert base["mean"] == pytest.approx(51.0) and base["std"] == pytest.approx(1.0) and base["n_seeds"] == 2


def test_controlled_baselines_follow_the_realigned_condition():
    """NLI baselines at 2 epochs (the controlled experiment's) vs 5 epochs (experiment 1)."""
    trials = controlled_trials()
    realigned = trials[trials["realign"] != "none"].assign(**{"settings/epochs": 2})
    two = trials[trials["realign"] == "none"].assign(**{"settings/epochs": 2})
    five = two.assign(**{"settings/epochs": 5, "score/ar": 0.1})
    mixed = results.tidy(pd.concat([realigned, two, five], ignore_index=True), "fixture")
    frame = tables.controlled_table(mixed, "udpos", "opus100", FAST)
    assert _cell(frame, model="A", realign="none", lang="ar")["mean"] == pytest.approx(51.0)
    experiment1, notes = tables.experiment1_trials(mixed)
    assert set(experiment1["settings/epochs"]) == {5} and any("epochs=5" in n for n in notes)


def test_seed_statistics_single_seed_std_is_nan():
    frame = pd.DataFrame({"k": ["a", "a", "b"], "seed": [0, 1, 0], "v": [1.0, 3.0, 5.0]})
    out = seed_statistics(frame, ["k"], "v", ddof=0).set_index("k")
    assert out.loc["a", "mean"] == 2.0 and out.loc["a", "std"] == 1.0 and out.loc["a", "n_seeds"] == 2
    assert out.loc["b", "mean"] == 5.0 and np.isnan(out.loc["b", "std"]) and out.loc["b", "n_seeds"] == 1


def test_paper_mark_rules():
    assert tables.paper_mark(0.5, 1.0) == "light"
    assert tables.paper_mark(-1.0, 1.0) == "light"  # |diff| == std: light, as the reference code
    assert tables.paper_mark(-1.5, 1.0) == "dark"
    assert tables.paper_mark(1.5, 1.0) == ""
    assert tables.paper_mark(-5.0, float("nan")) == ""


def test_build_tables_adds_tables_for_corpora_the_paper_did_not_use():
    trials = controlled_trials()
    ntrex = trials[trials["realign"] != "none"].assign(corpus="ntrex")
    built = tables.build_tables(results.tidy(pd.concat([trials, ntrex], ignore_index=True), "fixture"), FAST)
    assert {"table2", "table3", "table4", "table5", "table6", "table8", "table9", "table10", "table11",
            "table12", "table13", "table14", "table15", "table16", "table17"} <= set(built)
    assert "controlled_udpos_ntrex" in built
    extra = built["controlled_udpos_ntrex"]
    assert _cell(extra, model="A", realign="before", pairs="dico", lang="ar")["mean"] == pytest.approx(51.75)
    # No realigned runs on multiUN: Table 14 has the baselines and says so.
    assert set(built["table14"]["realign"]) == {"none"}
    assert any("multiun" in note for note in built["table14"].attrs["notes"])
