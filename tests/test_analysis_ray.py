"""A tiny real Ray Tune experiment (dummy function trainable, 1 CPU) read back through the
analysis' Ray reader and through ``python -m analysis``."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import results
from analysis.__main__ import main

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

EXPERIMENT_NAME = "tiny"


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("ray_results")

    # Defined here so Ray pickles it by value: the workers cannot import this test module.
    def dummy_trainable(config: dict) -> None:
        """Reports like the sweep's trial: pretrained alignment first, a training loss, then the
        final scores, CTL and fine-tuned alignment (nested dicts, flattened by Ray with '/')."""
        seed = config["seed"]
        shift = 0.1 * seed + (0.05 if config["realign"] == "before" else 0.0)
        tune.report({"align": {"pretrained": {"strong": {"en-x": {"ar": {"0": 0.1 + shift, "1": 0.2 + shift}}}}}, "step": 0})
        tune.report({"loss": 0.7, "step": 1})
        score_ar = 0.5 + shift
        tune.report({
            "score": {"en": 0.9, "ar": score_ar},
            "ctl": {"ar": (score_ar - 0.9) / 0.9},
            "align": {"finetuned": {"strong": {"en-x": {"ar": {"0": 0.05 + shift, "1": 0.15 + shift}}}}},
            "num_layers": 1,
            "loss": 0.3,
            "step": 2,
        })

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            dummy_trainable,
            param_space={
                "model": "e5-small", "model_source": "/models/e5", "task": "udpos",
                "realign": tune.grid_search(["none", "before"]), "pairs": "dico", "corpus": "ntrex",
                "seed": tune.grid_search([0, 1]), "settings": {"epochs": 2},
            },
            # One reused worker process: starting one per trial dominates the run time.
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name=EXPERIMENT_NAME, storage_path=str(storage), verbose=0),
        )
        grid = tuner.fit()
        assert not grid.errors
    finally:
        ray.shutdown()
    return storage / EXPERIMENT_NAME


def test_ray_reader_builds_one_row_per_trial_with_final_metrics(experiment_dir):
    trials = results.load_results(experiment_dir)
    assert len(trials) == 4
    assert list(trials.columns[:6]) == list(results.CONFIG_AXES)
    assert set(zip(trials["realign"], trials["seed"])) == {("none", 0), ("none", 1), ("before", 0), ("before", 1)}
    assert set(trials["status"]) == {"TERMINATED"} and trials["trial_id"].notna().all()
    assert "model_source" not in trials.columns and "settings/epochs" not in trials.columns  # constant setting
    row = trials[(trials["realign"] == "before") & (trials["seed"] == 1)].iloc[0]
    # The pretrained alignment came in the first report only: it is kept.
    assert row["align/pretrained/strong/en-x/ar/1"] == pytest.approx(0.2 + 0.15)
    assert row["align/finetuned/strong/en-x/ar/0"] == pytest.approx(0.05 + 0.15)
    assert row["score/ar"] == pytest.approx(0.65) and row["ctl/ar"] == pytest.approx((0.65 - 0.9) / 0.9)
    assert row["loss"] == pytest.approx(0.3) and row["num_layers"] == 1
    for bookkeeping in ("timestamp", "hostname", "time_total_s", "done"):
        assert bookkeeping not in trials.columns


def test_cli_on_the_ray_folder_writes_the_report(experiment_dir, tmp_path):
    out = tmp_path / "analysis"
    assert main([str(experiment_dir), "--out", str(out), "--resamples", "50"]) == 0
    assert (out / "trials.parquet").exists() and (out / "report.md").exists()
    report = (out / "report.md").read_text()
    assert "4 trials; 1 model(s); 1 task(s); 1 target language(s); 2 seed(s)." in report
    table13 = (out / "tables" / "controlled_udpos_ntrex.md").read_text()
    # Baseline ar: 50.0 and 60.0 -> 55.0 ± 5.0; before: 55.0, 65.0 -> 60.0 (within the std: light).
    assert "| e5-small | 90.0 ± 0.0 | 55.0 ± 5.0 |" in table13
    assert "| + before dico | 90.0 ± 0.0 ° | 60.0 ± 5.0 ° |" in table13
