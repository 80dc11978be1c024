"""The benchmark harness in smoke mode (toy model and toy data): every benchmark runs end to end
on tiny slices, and the printed table and the JSON file have the promised structure. Timings are
not checked (smoke slices measure nothing meaningful, and the machine is shared). Plus the pieces
whose results can be computed by hand: the per-query baseline, the overhead breakdown, the GPU
section's worker (run on CPU) and its token accounting."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks.__main__ import BENCHMARK_NAMES, TABLE_COLUMNS, _registry, inputs_of, main, select
from benchmarks.alignment_speed import per_query_loop_accuracy
from benchmarks.corpus_memory import TARGET_LINES, rows as corpus_memory_rows, write_corpus
from benchmarks.sweep_overhead import overhead_breakdown

ROW_KEYS = {"benchmark", "ours", "baseline", "ratio", "target", "passed", "note"}


def test_smoke_run_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "nested" / "results.json"  # the folder does not exist yet
    status = main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed[-3000:]

    for column in TABLE_COLUMNS:
        assert column in printed

    document = json.loads(out.read_text())
    assert document["mode"] == "smoke"
    assert document["columns"] == list(TABLE_COLUMNS)
    assert [s["name"] for s in document["sections"]] == list(BENCHMARK_NAMES)
    assert not list(out.parent.glob(".*tmp")), "temporary file left next to the JSON"
    assert document["machine"]["cpu_count"] >= 1 and document["total_seconds"] > 0

    rows = document["table"]
    assert rows and all(set(row) == ROW_KEYS for row in rows)
    assert rows == [row for section in document["sections"] for row in section["rows"]]
    by_section = {s["name"]: s for s in document["sections"]}
    # every CPU benchmark ran and has exactly one row with a target (pass or fail), the rest are info
    for name in ("finetune", "alignment", "shared", "sweep"):
        section = by_section[name]
        assert section["status"] == "ok", section["status"]
        targeted = [row for row in section["rows"] if row["passed"] is not None]
        assert len(targeted) == 1, name
        ratio = targeted[0]["ratio"]
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
        assert targeted[0]["benchmark"] in printed
    assert document["all_passed"] == all(row["passed"] for row in rows if row["passed"] is not None)

    gpu = by_section["gpu"]
    import torch

    if not torch.cuda.is_available():
        assert gpu["status"] == "skipped: no GPU"
        assert "gpu: skipped: no GPU" in printed

    # the sweep section measured every trial of the engine run and split its overhead
    sweep = by_section["sweep"]["details"]
    assert len(sweep["engine"]["trial_timings"]) == sweep["trials"]
    assert set(sweep["engine"]["breakdown"]["per_trial"]) == {
        "process_start_and_scheduling", "imports", "checkpointing", "result_sync", "unaccounted"}
    # benchmark 6 measured both pair sources on a small corpus: information rows, no verdict
    memory = by_section["corpus_memory"]
    assert memory["status"] == "ok", memory["status"]
    assert [row["passed"] for row in memory["rows"]] == [None, None]
    for source, row in zip(("dico", "fastalign"), memory["rows"]):
        result = memory["details"]["sources"][source]
        assert row["benchmark"].startswith(f"6. corpus memory: {source}{' (numpy)' if source == 'fastalign' else ''}, ")
        if "skipped" not in result:
            assert result["sentences"] == memory["details"]["lines"] and result["pairs"] > 0
            assert 0 < result["peak_bytes"] < 4 * 1024**3 and row["ours"].endswith(" GB")
    # the second trial of the shared-work benchmark found its shared work in the cache
    shared = by_section["shared"]["details"]
    assert shared["second"]["phases"]["pretrained_alignment"] < shared["first"]["phases"]["pretrained_alignment"]


def test_unknown_benchmark_name_suggests_the_close_one():
    with pytest.raises(ValueError, match="did you mean 'sweep'"):
        select(["swep"])
    assert select(["gpu", "finetune"]) == ["finetune", "gpu"]


def test_per_query_loop_baseline_matches_hand_computed_accuracies():
    import torch

    from trainables.alignment import alignment_accuracy

    # One layer, two pairs in 2-D (cosines by hand):
    # en-x: q0 (1,0): tgt0 .6 > tgt1 -.6 -> weak right; but its own side src1 ~.99 > .6 -> strong wrong.
    #       q1 (.99,.14): tgt1 -.48 < tgt0 .71 -> wrong.
    # x-en: t0 (.6,.8): src0 .6 < src1 .71 -> wrong. t1 (-.6,.8): src1 -.48 > src0 -.6 -> weak right;
    #       own side t0 .28 > -.48 -> strong wrong.
    src = torch.tensor([[[1.0, 0.0], [0.99, 0.14]]])
    tgt = torch.tensor([[[0.6, 0.8], [-0.6, 0.8]]])
    expected = {("weak", "en-x"): 0.5, ("strong", "en-x"): 0.0, ("weak", "x-en"): 0.5, ("strong", "x-en"): 0.0}
    loop = per_query_loop_accuracy(src, tgt)
    ours = alignment_accuracy(src, tgt)
    for key, value in expected.items():
        assert loop[key].tolist() == pytest.approx([value]), key
        assert ours[key].tolist() == pytest.approx([value]), key
    # a subset of queries: only q0 -> en-x weak 1, strong 0
    assert per_query_loop_accuracy(src, tgt, [0])[("weak", "en-x")].tolist() == pytest.approx([1.0])


def test_overhead_breakdown_replays_trials_onto_slots():
    marks = {"driver_imports_done": 2.0, "ray_start_begin": 2.0, "ray_started": 5.0}
    trial = dict(imports_seconds=1.0, checkpoint_seconds=0.5, report_seconds=0.25, checkpoints=1, reports=2)
    trials = [
        {**trial, "entered": 6.0, "exited": 16.0, "run_trial_seconds": 8.0},  # slot A, gap 1 after Ray
        {**trial, "entered": 7.0, "exited": 17.0, "run_trial_seconds": 8.0},  # slot B, gap 2
        {**trial, "entered": 19.0, "exited": 29.0, "run_trial_seconds": 8.0},  # slot A (free at 16), gap 3
    ]
    result = overhead_breakdown(trials, marks, launched=0.0, finished=31.0, slots=2)
    assert result["per_trial"]["process_start_and_scheduling"] == pytest.approx((1 + 2 + 3) / 3)
    assert result["per_trial"]["imports"] == pytest.approx(1.0)
    assert result["per_trial"]["unaccounted"] == pytest.approx(10 - 1 - 8)
    assert result["per_trial_compute"] == pytest.approx(8 - 0.5 - 0.25)
    assert result["fixed"] == {"driver_start_and_imports": 2.0, "ray_start": 3.0, "after_last_trial": 2.0}


def test_gpu_code_path_runs_packed_workers_on_cpu(tmp_path):
    """The GPU section cannot run here; its worker, barrier and aggregation are the same on CPU."""
    from benchmarks.gpu_throughput import ModelShape, packed_throughput

    tiny = ModelShape("tiny-xlmr", "xlm-roberta", layers=1, hidden=16, heads=2, intermediate=32, vocab=300)
    result = packed_throughput(tiny, packing=2, device="cpu", folder=tmp_path, warm_steps=1, timed_steps=2,
                               batch_size=4)
    assert "error" not in result, result
    assert len(result["workers"]) == 2
    # each worker counted the real tokens of its 2 timed steps of 4 examples (lengths 4..128)
    for worker in result["workers"]:
        assert 2 * 4 * 4 <= worker["tokens"] <= 2 * 4 * 128
        assert worker["end"] >= worker["start"]
    assert result["tokens_per_second"] > 0


def test_gpu_worker_loads_the_model_folder_it_is_given(tmp_path, toy_assets):
    """e5-small's rows load its folder where one is there: the worker builds the model from `source`."""
    from transformers import AutoConfig

    from benchmarks.gpu_throughput import ModelShape, packed_throughput

    model_dir = toy_assets[1]
    config = AutoConfig.from_pretrained(model_dir)
    shape = ModelShape("toy-bert", "bert", config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                       config.intermediate_size, config.vocab_size)
    steps = dict(warm_steps=1, timed_steps=2, batch_size=4)
    loaded = packed_throughput(shape, packing=1, device="cpu", folder=tmp_path / "a", source=model_dir, **steps)
    assert "error" not in loaded, loaded
    assert loaded["tokens_per_second"] > 0
    missing = packed_throughput(shape, packing=1, device="cpu", folder=tmp_path / "b", source=tmp_path / "absent",
                                **steps)
    assert "error" in missing  # the folder is read, not ignored


def test_only_the_inputs_of_the_chosen_benchmarks_are_required(tmp_path, monkeypatch, capsys):
    """The GPU section reads neither e5-small nor ../shared/data, so a GPU node holding only the
    project runs it; the others still refuse to start without theirs."""
    import torch

    assert inputs_of(["gpu"]) == set() and inputs_of(BENCHMARK_NAMES) == {"model", "data"}
    assert list(_registry()) == list(BENCHMARK_NAMES)  # the modules' own NAMEs, in the CLI's order
    monkeypatch.setenv("E5_SMALL_PATH", str(tmp_path / "no-model"))
    monkeypatch.setenv("SWEEP_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the section's CPU path: skipped
    assert main(["--only", "gpu", "--out", str(tmp_path / "gpu.json")]) == 0
    assert "skipped: no GPU" in capsys.readouterr().out
    assert main(["--only", "finetune", "--out", str(tmp_path / "finetune.json")]) == 2
    errors = capsys.readouterr().err
    assert "model not found" in errors and "data not found" in errors
    assert main(["--only", "corpus_memory", "--out", str(tmp_path / "memory.json")]) == 2
    errors = capsys.readouterr().err
    assert "data not found" in errors and "model not found" not in errors


def test_paper_configs_and_full_grid_estimate():
    from benchmarks.gpu_throughput import PAPER_SHAPES, build_config, grid_hours, trial_token_equivalents

    expected = {  # layers, hidden, vocab of the four paper models
        "distilbert-base-multilingual-cased": (6, 768, 119547),
        "bert-base-multilingual-cased": (12, 768, 119547),
        "xlm-roberta-base": (12, 768, 250002),
        "xlm-roberta-large": (24, 1024, 250002),
    }
    for name, (layers, hidden, vocab) in expected.items():
        config = build_config(PAPER_SHAPES[name])
        assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (layers, hidden, vocab), name
        assert config.num_labels == 17
    # udpos, no realignment, 5 epochs, by hand: training 5 x 12544 x 23.0 = 1,442,560; alignment
    # 2 stages x 5 langs x 770 sentences x 67.7 = 521,290; test sets 153,054.1; forward-only at 1/3.
    assert trial_token_equivalents("udpos", "none", 5) == pytest.approx(1_442_560 + (521_290 + 153_054.1) / 3)
    # joint adds 392 steps/epoch x 5 x 16 pairs x 67.7 tokens
    assert trial_token_equivalents("udpos", "joint", 5) - trial_token_equivalents("udpos", "none", 5) == \
        pytest.approx(392 * 5 * 16 * 67.7)
    rates = {name: 1e5 for name in expected}  # tokens/s
    hours = grid_hours(rates)
    assert set(hours) == {"experiment 1", "experiment 2"}
    assert set(hours["experiment 1"]["by_model"]) == set(expected)
    assert set(hours["experiment 2"]["by_model"]) == set(expected)  # NLI baselines of all four
    assert 0 < hours["experiment 1"]["total"] < hours["experiment 2"]["total"]


def test_corpus_memory_rows_judge_the_larger_peak_and_only_at_the_target_size():
    gib = 1024**3
    result = dict(seconds=12.0, sentences=10, pairs=20)
    results = {
        "dico": {**result, "peak_bytes": 3 * gib, "children_peak_bytes": 0},
        "fastalign": {**result, "peak_bytes": 1 * gib, "children_peak_bytes": 5 * gib},  # fast_align's child
    }
    at_target = corpus_memory_rows(results, TARGET_LINES)
    assert [(row.ours, row.passed) for row in at_target] == [("3.00 GB", True), ("5.00 GB", False)]
    assert at_target[0].benchmark == "6. corpus memory: dico, 1,000,000 lines"
    assert at_target[1].benchmark == "6. corpus memory: fastalign (numpy), 1,000,000 lines"
    assert all(row.target == "< 4 GB at 1M lines" for row in at_target)
    smaller = corpus_memory_rows(results, 100_000)
    assert [row.passed for row in smaller] == [None, None] and "1,000,000" in smaller[1].note
    skipped = corpus_memory_rows({"fastalign": {"skipped": "pair source 'fastalign' needs fast_align"}}, TARGET_LINES)
    assert (skipped[0].ours, skipped[0].passed, skipped[0].note) == ("skipped", None,
                                                                     "pair source 'fastalign' needs fast_align")


def test_corpus_memory_corpus_repeats_the_source_lines_aligned_and_numbered(tmp_path):
    source = tmp_path / "source"
    (source / "parallel" / "ntrex").mkdir(parents=True)
    (source / "parallel" / "ntrex" / "en-es.en").write_text("a\nb\nc\n", encoding="utf-8")
    (source / "parallel" / "ntrex" / "en-es.es").write_text("A\nB\nC\n", encoding="utf-8")
    (source / "muse").mkdir()
    (source / "muse" / "en-es.txt").write_text("a A\n", encoding="utf-8")
    out = tmp_path / "out"
    write_corpus(out, source, 7)
    en = (out / "parallel" / "synthetic" / "en-es.en").read_text(encoding="utf-8").splitlines()
    es = (out / "parallel" / "synthetic" / "en-es.es").read_text(encoding="utf-8").splitlines()
    # 7 lines: two shuffled rounds of the 3 source lines, then one more; line i ends with " i"
    assert len(en) == len(es) == 7
    assert [line.split()[1] for line in en] == [str(i) for i in range(7)] == [line.split()[1] for line in es]
    assert all(e.split()[0].upper() == x.split()[0] for e, x in zip(en, es))
    assert sorted(line.split()[0] for line in en[:3]) == sorted(line.split()[0] for line in en[3:6]) == ["a", "b", "c"]
    assert (out / "muse" / "en-es.txt").read_text(encoding="utf-8") == "a A\n"
    with pytest.raises(ValueError, match="--lines 0"):
        write_corpus(out, source, 0)
    (source / "parallel" / "ntrex" / "en-es.es").write_text("A\n", encoding="utf-8")
    with pytest.raises(ValueError, match="3 English lines, 1 es lines"):
        write_corpus(out, source, 2)


def test_corpus_memory_command_refuses_bad_arguments_in_one_line(capsys):
    from benchmarks.corpus_memory import main as corpus_memory_main

    for arguments, expected in ((["--lines", "0"], "'0': a whole number >= 1"),
                                (["--sources", "dico,awsome"], "comma-separated subset of dico,fastalign")):
        with pytest.raises(SystemExit) as exit_info:
            corpus_memory_main(arguments)
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    assert main(["--corpus-lines", "0", "--only", "corpus_memory"]) == 2
    assert "--corpus-lines 0: must be >= 1" in capsys.readouterr().err
