"""The transcribed published numbers and the side-by-side comparison."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import paper

DISTIL = "distilbert-base-multilingual-cased"
XLMR_BASE = "xlm-roberta-base"
XLMR_LARGE = "xlm-roberta-large"

# Rows x columns of each published table, as printed in the paper.
EXPECTED_CELLS = {
    "table2": 3 * 2 * 4, "table3": 3 * 4 * 3, "table4": 10 * 3, "table5": 7 * 5, "table6": 7 * 2,
    "table8": 3 * 2 * 4, "table9": 3 * 2 * 4, "table10": 3 * 4 * 5, "table11": 7 * 2,
    "table12": (7 + 13 + 13 + 25) * 2,
    "table13": 22 * 6, "table14": 22 * 6, "table15": 22 * 6, "table16": 21 * 6, "table17": 10 * 6,
}


def _value(frame: pd.DataFrame, column: str, **keys) -> float:
    mask = pd.Series(True, index=frame.index)
    for key, value in keys.items():
        mask &= frame[key] == value
    assert mask.sum() == 1, keys
    return float(frame.loc[mask, column].iloc[0])


@pytest.mark.parametrize("name", sorted(paper.PAPER_TABLES))
def test_every_published_table_loads_with_unique_keys(name):
    frame = paper.load_paper_numbers(name)
    spec = paper.PAPER_TABLES[name]
    assert len(frame) == EXPECTED_CELLS[name]
    assert not frame.duplicated(list(spec.keys)).any()
    for value in spec.values:
        assert pd.to_numeric(frame[value]).notna().all()


def test_spot_values_quoted_in_the_paper_notes():
    t2 = paper.load_paper_numbers("table2")
    for task, rho in (("udpos", 0.82), ("wikiann", 0.86), ("xnli", 0.86)):
        assert _value(t2, "rho", task=task, layer="last", kind="strong", stage="before") == rho
    assert _value(t2, "rho", task="xnli", layer="penult", kind="strong", stage="after") == 0.92
    t4 = paper.load_paper_numbers("table4")
    assert _value(t4, "mean", model=DISTIL, realign="none", task="udpos") == 73.1
    assert _value(t4, "mean", model=DISTIL, realign="before", task="udpos") == 78.0
    assert _value(t4, "mean", model=DISTIL, realign="joint", task="udpos") == 77.9
    assert _value(t4, "mean", model=XLMR_LARGE, realign="none", task="udpos") == 79.6
    t13 = paper.load_paper_numbers("table13")
    baseline = [_value(t13, "mean", model=DISTIL, realign="none", lang=l) for l in ("en", "ar", "es", "fr", "ru", "zh")]
    assert baseline == [96.1, 51.0, 84.1, 85.3, 81.2, 64.1]
    dico = [_value(t13, "mean", model=DISTIL, realign="before", pairs="dico", lang=l) for l in ("en", "ar", "es", "fr", "ru", "zh")]
    assert dico == [96.1, 65.5, 85.8, 86.5, 84.7, 67.4]
    t10 = paper.load_paper_numbers("table10")
    assert _value(t10, "mean", task="udpos", model=DISTIL, lang="ar") == -0.74
    assert _value(t10, "mean", task="udpos", model=DISTIL, lang="es") == -0.86
    assert _value(t10, "mean", task="xnli", model=XLMR_LARGE, lang="ar") == 25.36
    assert _value(t10, "std", task="xnli", model=XLMR_LARGE, lang="ar") == 10.33
    t9 = paper.load_paper_numbers("table9")
    assert _value(t9, "ci_low", task="xnli", layer="penult", direction="x-en", stage="after") == 0.90
    # Table 16 prints "same" for the English column; stored as en.
    assert "en" in set(paper.load_paper_numbers("table16")["lang"])


def test_comparison_matches_models_by_canonical_name_and_reports_missing_cells():
    published = paper.load_paper_numbers("table17")
    ours = published[published["model"] == XLMR_BASE].copy()
    ours["model"] = "FacebookAI/xlm-roberta-base"
    ours["mean"] = ours["mean"] + 1.5
    ours["extra"] = "ignored"
    comparison = paper.compare_with_paper("table17", ours)
    assert len(comparison) == len(published)
    mine = comparison[comparison["model"] == XLMR_BASE]
    assert (mine["mean_diff"].round(9) == 1.5).all() and (mine["std_diff"].round(9) == 0).all()
    assert _value(comparison, "mean_paper", model=XLMR_BASE, realign="joint", pairs="dico", lang="zh") == 72.7
    others = comparison[comparison["model"] != XLMR_BASE]
    assert others["mean_ours"].isna().all() and others["mean_paper"].notna().all()
    markdown = paper.comparison_markdown("table17", comparison, "T17")
    assert "| XLM-R Base | joint | dico | zh | 74.2 | 72.7 | +1.5 |" in markdown
    assert f"- {len(mine)} of {len(published)} published cells present in this run" in markdown
    assert "| distilmBERT | none |  | en | missing | 76.0 | missing |" in markdown


def test_unknown_table_suggests_a_name():
    with pytest.raises(KeyError, match="did you mean 'table13'"):
        paper.load_paper_numbers("table 13")
