"""Loading and tidying results: column normalisation, derived columns, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import results
from analysis.results import ResultsError


def raw_row(**overrides) -> dict:
    row = {"model": "xlm-roberta-base", "task": "udpos", "realign": "none", "pairs": "dico", "corpus": "opus100",
           "seed": 0, "score/en": 0.8, "score/ar": 0.6, "align/pretrained/strong/en-x/ar/0": 0.1,
           "align/pretrained/strong/en-x/ar/2": 0.3}
    row.update(overrides)
    return row


def test_ray_style_prefixes_are_normalised():
    frame = pd.DataFrame([{
        "config/axes/model": "bert-base-multilingual-cased", "config/task": "wikiann", "config/realign": "joint",
        "config/pairs": "awesome", "config/corpus": "multiun", "config/seed": 3, "config/model_source": "/x",
        "metrics/score/en": 0.9, "metrics/score/fr": 0.45, "align/finetuned/weak/x-en/fr/1": 0.7,
        "timestamp": 123, "hostname": "h", "training_iteration": 4, "loss": 0.1, "trial_id": "abc",
    }])
    tidy = results.tidy(frame, "ray")
    assert tidy.loc[0, "model"] == "bert-base-multilingual-cased" and tidy.loc[0, "seed"] == 3
    assert tidy.loc[0, "score/fr"] == 0.45 and tidy.loc[0, "loss"] == 0.1 and tidy.loc[0, "trial_id"] == "abc"
    for dropped in ("timestamp", "hostname", "training_iteration", "config/model_source", "model_source"):
        assert dropped not in tidy.columns
    # Derived: CTL (Eq. 1) and the number of layers.
    assert tidy.loc[0, "ctl/fr"] == pytest.approx((0.45 - 0.9) / 0.9)
    assert tidy.loc[0, "num_layers"] == 1
    # Column order: axes first, then the optional columns, then metrics.
    assert list(tidy.columns[:6]) == list(results.CONFIG_AXES)


def test_plain_columns_win_over_config_duplicates_and_fill_gaps():
    frame = pd.DataFrame([raw_row(**{"config/model": "other"}), raw_row(model=None, **{"config/model": "filled"})])
    tidy = results.tidy(frame, "t")
    assert list(tidy["model"]) == ["xlm-roberta-base", "filled"]


def test_reported_ctl_is_kept_and_num_layers_reported_wins():
    tidy = results.tidy(pd.DataFrame([raw_row(**{"ctl/ar": -0.5, "num_layers": 12})]), "t")
    assert tidy.loc[0, "ctl/ar"] == -0.5 and tidy.loc[0, "num_layers"] == 12
    inferred = results.tidy(pd.DataFrame([raw_row()]), "t")
    assert inferred.loc[0, "ctl/ar"] == pytest.approx(-0.25) and inferred.loc[0, "num_layers"] == 2


def test_only_varying_settings_are_kept():
    frame = pd.DataFrame([
        raw_row(**{"config/settings/epochs": 5, "config/settings/lr": 2e-5, "config/settings/langs": ["ar"]}),
        raw_row(seed=1, **{"config/settings/epochs": 2, "config/settings/lr": 2e-5, "config/settings/langs": ["ar", "fr"]}),
    ])
    tidy = results.tidy(frame, "t")
    assert "settings/lr" not in tidy.columns
    assert list(tidy["settings/epochs"]) == [5, 2]
    assert list(tidy["settings/langs"]) == [json.dumps(["ar"]), json.dumps(["ar", "fr"])]
    assert list(results.condition_labels(tidy)) == ['epochs=5, langs=["ar"]', 'epochs=2, langs=["ar", "fr"]']


@pytest.mark.parametrize(
    "row, expected",
    [
        (raw_row(realign=" "), "row 0: config column 'realign' is empty"),
        (raw_row(**{"score/ar": 61.0}), "row 0: score/ar=61.0 is outside [0, 1]"),
        (raw_row(seed="first"), "row 0: seed='first' is not an integer"),
        ({k: v for k, v in raw_row().items() if k != "task"}, "missing config column(s) task"),
    ],
)
def test_bad_tables_give_one_line_errors(row, expected):
    with pytest.raises(ResultsError) as error:
        results.tidy(pd.DataFrame([row]), "results.csv")
    message = str(error.value)
    assert message.startswith("results.csv: ") and expected in message and "\n" not in message


def test_ambiguous_nested_config_axis_is_an_error():
    frame = pd.DataFrame([raw_row(**{"config/a/corpus": "x", "config/b/corpus": "y"})].copy())
    frame = frame.drop(columns="corpus")
    with pytest.raises(ResultsError, match="ambiguous"):
        results.tidy(frame, "t")


def test_bad_paths_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(ResultsError, match=r"nope: does not exist; expected a Ray Tune experiment folder"):
        results.load_results(tmp_path / "nope")
    text_file = tmp_path / "results.txt"
    text_file.write_text("x")
    with pytest.raises(ResultsError, match=r"results.txt: unsupported file type '.txt'"):
        results.load_results(text_file)
    with pytest.raises(ResultsError, match=r"not a Ray Tune experiment folder \(no experiment_state\*\.json\)"):
        results.load_results(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("model,task,realign,pairs,corpus,seed\n")
    with pytest.raises(ResultsError, match="contains no trials"):
        results.load_results(empty)


def test_csv_and_parquet_round_trip_through_write_trials(tmp_path):
    tidy = results.tidy(pd.DataFrame([raw_row(), raw_row(seed=1, realign="before")]), "t")
    written = results.write_trials(tidy, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv", "trials.parquet"]  # no temp files left
    for path in written:
        again = results.load_results(path)
        pd.testing.assert_frame_equal(again, tidy, check_dtype=False)


def test_alignment_long_counts_depth_from_the_last_layer():
    tidy = results.tidy(pd.DataFrame([raw_row(num_layers=2)]), "t")
    long = results.alignment_long(tidy).sort_values("layer")
    assert list(long["layer"]) == [0, 2] and list(long["depth"]) == [2, 0]
    assert list(long["value"]) == [0.1, 0.3]
    assert set(long["stage"]) == {"pretrained"} and set(long["lang"]) == {"ar"}


def test_model_names_and_orders():
    assert results.canonical_model("FacebookAI/xlm-roberta-large") == "xlm-roberta-large"
    assert results.display_model("/models/bert-base-multilingual-cased/") == "mBERT"
    assert results.display_model("e5-small") == "e5-small"
    assert results.model_order(["e5-small", "xlm-roberta-large", "distilbert-base-multilingual-cased"]) == [
        "distilbert-base-multilingual-cased", "xlm-roberta-large", "e5-small"]
    assert results.language_order(["zh", "en", "de", "ar"]) == ["ar", "zh", "de"]
    assert results.normalised_name("multiUN") == results.normalised_name("multi_un")
    tidy = results.tidy(pd.DataFrame([raw_row(**{"score/zh": 0.5, "ctl/de": -0.1})]), "t")
    assert results.target_languages(tidy) == ["ar", "zh", "de"]
    assert np.isnan(results.tidy(pd.DataFrame([raw_row(**{"score/en": 0.0})]), "t").loc[0, "ctl/ar"])
