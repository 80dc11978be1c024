"""Bad input is found before training, fully, and reported in one line: settings
(trainables/settings.py), model folders (trainables/model_files.py) and the sweep's preflight
(sweep/preflight.py). Data-file readers are tested in tests/test_data.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sweep.cli import main as sweep_main
from sweep.experiment import ExperimentError, build_experiment
from sweep.preflight import (
    FASTALIGN_DRIVER_NOTE,
    fastalign_missing_here,
    fastalign_node_problems,
    preflight_problems,
)
from trainables.data import describe_missing, required_data
from trainables.errors import TrialInputError
from trainables.model_files import check_config, check_model_folder, checkpoint_names, missing_encoder_weights
from trainables.settings import SETTING_NAMES, SETTING_RULES, Settings, make_settings

# --- settings -------------------------------------------------------------------------------------


def test_every_setting_has_one_rule_and_the_defaults_pass():
    assert set(SETTING_RULES) == set(SETTING_NAMES)
    assert Settings() == make_settings({})


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_every_setting_rejects_a_value_of_the_wrong_type(name):
    with pytest.raises(TrialInputError) as error:
        Settings(**{name: object()})
    message = str(error.value)
    assert message.startswith(f"setting {name}=") and "\n" not in message


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("epochs", 0, "a whole number >= 1"),
        ("epochs", -1, "a whole number >= 1"),
        ("epochs", 2.5, "a whole number >= 1"),
        ("epochs", "5", "a whole number >= 1"),
        ("epochs", True, "a whole number >= 1"),  # a bool is not a count
        ("learning_rate", "fast", "a number > 0"),
        ("learning_rate", 0, "a number > 0"),
        ("learning_rate", float("nan"), "a number > 0"),
        ("learning_rate", False, "a number > 0"),
        ("batch_size", 0, ">= 1"),
        ("micro_batch_size", 0, ">= 1"),
        ("eval_batch_size", 0, ">= 1"),
        ("align_pairs", 1, "a whole number >= 2"),
        ("train_subset", 0, "None or a whole number >= 1"),
        ("test_subset", -5, "None or a whole number >= 1"),
        ("parallel_subset", "all", "None or a whole number >= 1"),
        ("warmup_ratio", 1.0, "a number in [0, 1)"),
        ("warmup_ratio", -0.1, "a number in [0, 1)"),
        ("realign_temperature", 0.0, "a number > 0"),
        ("joint_weight", -1.0, "a number >= 0"),
        ("max_grad_norm", 0, "None or a number > 0"),
        ("realign_layer", 1.5, "a whole number"),
        ("realign_layer", True, "a whole number"),
        ("realign_steps", 0, "None or a whole number >= 1"),
        ("task_max_length", 2, "a whole number >= 3"),
        ("num_threads", 0, "None or a whole number >= 1"),
        ("device", "gpu", "'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"),
        ("device", "cuda:x", "'cuda:N'"),
        ("long_sentences", "split", "one of 'windows', 'truncate'"),
        ("align_sampling", "random", "one of 'sentences', 'uniform'"),
        ("realign_schedule", "cosine", "one of 'linear', 'constant'"),
        ("ctl_reference_split", "train", "one of 'test', 'dev'"),
        ("subset_mode", "last", "one of 'first', 'random'"),
        ("align_pooling", "max", "one of 'first', 'mean'"),
        ("precision", "fp16", "one of 'tf32', 'fp32', 'bf16'"),
        ("preset", "papr", "did you mean 'paper'?"),
        ("eval_pairs", "dicco", "did you mean 'dico'?"),
        ("keep_lone_prefix", "false", "True or False"),
        ("ner_post_processing", 1, "True or False"),
        ("dico_lowercase", None, "True or False"),
        ("langs", ["es", "xx"], "unknown target language 'xx'"),
        ("langs", ["en", "es"], "unknown target language 'en'"),  # English is the source
        ("langs", "es", "a non-empty list of target languages"),  # not ('e', 's')
        ("langs", [], "a non-empty list of target languages"),
        ("langs", ["es", "es"], "listed twice"),
        ("awesome_model", "", "a model folder or hub id"),
        ("data_dir", 3, "None or a path"),
        ("awesome_layer", -1, "a whole number >= 0"),
        ("awesome_threshold", 1.0, "a number in [0, 1)"),
    ],
)
def test_bad_setting_is_one_line_naming_it_and_what_is_valid(name, value, expected):
    with pytest.raises(TrialInputError) as error:
        make_settings({name: value})
    message = str(error.value)
    assert message.startswith(f"setting {name}=") and expected in message and "\n" not in message


def test_zero_batch_sizes_give_one_line_not_a_division_by_zero():
    with pytest.raises(TrialInputError, match=r"^setting batch_size=0: expected a whole number >= 1$"):
        Settings(batch_size=0, micro_batch_size=0)
    with pytest.raises(TrialInputError, match="micro_batch_size=12 must divide batch_size=32"):
        Settings(micro_batch_size=12)
    with pytest.raises(TrialInputError, match="micro_batch_size=64 must divide batch_size=32"):
        Settings(micro_batch_size=64)


def test_values_are_normalised_so_equal_settings_are_equal(tmp_path):
    settings = make_settings(dict(epochs=5.0, learning_rate=1, langs=["es", "fr"], data_dir=tmp_path,
                                  device="cuda:1", train_subset=None))
    assert type(settings.epochs) is int and settings.epochs == 5
    assert type(settings.learning_rate) is float
    assert settings.langs == ("es", "fr") and settings.data_dir == str(tmp_path)
    assert settings == make_settings(dict(epochs=5, learning_rate=1.0, langs=("es", "fr"), data_dir=str(tmp_path),
                                          device="cuda:1"))
    hash(settings)  # a list of languages would make it unhashable


def test_the_preset_is_checked_again_after_it_applies():
    coded = make_settings({"preset": "acl2023-code"}, model="xlm-roberta-base")
    assert coded.realign_layer == -2 and coded.learning_rate < Settings().learning_rate


MINIMAL_GRID = dict(model=["xlm-roberta-base"], task=["udpos"], realign=["none"], pairs=["dico"],
                    corpus=["ntrex"], seed=[0])


def test_experiment_and_command_line_settings_are_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ExperimentError) as error:
        build_experiment(dict(grids=[dict(MINIMAL_GRID, settings=dict(warmup_ratio=1.5))]), where="exp.py")
    assert "exp.py: grids[0]: settings: setting warmup_ratio=1.5: expected a number in [0, 1)" in str(error.value)
    exp = tmp_path / "exp.py"
    exp.write_text(f"EXPERIMENT = dict(grids=[{MINIMAL_GRID!r}])\n")
    assert sweep_main([str(exp), "--dry-run", "--set", "epochs=five"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setting epochs='five': expected a whole number >= 1" in err[0]


# --- model folders --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> tuple[Path, Path]:
    """A very small toy data folder and an untrained one-layer BERT with its tokenizer."""
    import toyworld as toy

    root = tmp_path_factory.mktemp("tiny")
    data = toy.write_toy_data(root / "data", langs=("es",), n_train=20, n_test=8, n_parallel=20)
    model = toy.write_toy_model(root / "model", data, pretrain_steps=0, hidden_size=16, heads=2,
                                intermediate=32, num_layers=1, vocab_size=300)
    return data, model


@pytest.fixture
def model_copy(tiny_world, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_world[1], tmp_path / "model"))


def _one_line_error(folder: Path) -> str:
    with pytest.raises(TrialInputError) as error:
        check_model_folder(str(folder))
    message = str(error.value)
    assert "\n" not in message and len(message) < 600
    return message


def test_a_sound_toy_folder_passes(tiny_world):
    config = check_model_folder(str(tiny_world[1]))
    assert config.model_type == "bert" and config.num_hidden_layers == 1


def test_real_e5_small_checkpoint_names_cover_its_encoder(e5_small):
    # The names of a real checkpoint (not written by this project) must match without a full load;
    # the tokenizer checks are the toy folder's (loading e5-small's tokenizer alone takes seconds).
    config = check_config(e5_small)
    path, names = checkpoint_names(e5_small)
    assert path.name == "model.safetensors" and config.num_hidden_layers == 12
    assert missing_encoder_weights(config, names) == []
    assert missing_encoder_weights(config, {n for n in names if ".layer.11." not in n})[:1] == [
        "encoder.layer.11.attention.output.LayerNorm.bias"]


def test_garbled_tensor_names_are_an_error_not_random_weights(model_copy):
    weights = model_copy / "model.safetensors"
    # Same length, valid header: transformers loads it and initialises the encoder layers at random.
    weights.write_bytes(weights.read_bytes().replace(b"encoder.layer", b"encoder.lay3r"))
    message = _one_line_error(model_copy)
    assert message.startswith(f"{weights}: 16 encoder weights missing") and "encoder.layer.0." in message


def test_garbled_weight_bytes_are_one_line(model_copy):
    weights = model_copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[8:40] = bytes(range(200, 232))  # the JSON header's first bytes
    weights.write_bytes(bytes(raw))
    assert _one_line_error(model_copy).startswith(f"{weights}: the weights do not load")


def test_truncated_and_absent_weights(model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "file not fully covered" in _one_line_error(model_copy)
    weights.unlink()
    assert _one_line_error(model_copy).startswith(f"{model_copy}: no weights file (expected one of model.safetensors")


def test_invalid_config_json_names_file_and_line(model_copy):
    config = model_copy / "config.json"
    config.write_text('{\n  "model_type": "bert",\n  "hidden_size": 16,\n}\n')
    assert _one_line_error(model_copy).startswith(f"{config}:4: invalid JSON")
    config.write_text('{"model_type": "bertt"}')
    assert _one_line_error(model_copy).startswith(f"{config}: transformers cannot read it")


def test_invalid_tokenizer_json_is_one_line(model_copy):
    path = model_copy / "tokenizer.json"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2], encoding="utf-8")  # cut in the middle
    assert _one_line_error(model_copy).startswith(f"{path}:")
    spec = json.loads(text)
    spec["model"]["type"] = "NoSuchModel"
    path.write_text(json.dumps(spec), encoding="utf-8")
    assert _one_line_error(model_copy).startswith(f"{path}: the tokenizer does not load")
    path.unlink()  # transformers then builds a tokenizer of the special tokens alone
    assert "no vocabulary beyond its 5 special tokens" in _one_line_error(model_copy)


def test_tokenizer_larger_than_the_embeddings(model_copy):
    config = model_copy / "config.json"
    values = json.loads(config.read_text())
    values["vocab_size"] = 50
    config.write_text(json.dumps(values))
    assert "but " + str(config) + " has vocab_size=50" in _one_line_error(model_copy)


# --- the sweep's preflight ---------------------------------------------------------------------------


def _experiment(data: Path, model: Path, pairs: str = "dico", awesome_model: str | None = None):
    settings = dict(data_dir=str(data), langs=["es"])
    if awesome_model:
        settings["awesome_model"] = awesome_model
    return build_experiment(dict(
        models={"tiny": dict(source=str(model))},
        settings=settings,
        grids=[dict(model=["tiny"], task=["udpos", "xnli"], realign=["none"], pairs=[pairs], corpus=["toy"], seed=[0])],
    ))


def test_preflight_passes_a_sound_sweep(tiny_world):
    data, model = tiny_world
    assert preflight_problems(_experiment(data, model)) == []


def test_preflight_finds_bad_model_and_bad_data_files_in_one_line_each(tiny_world, tmp_path, model_copy):
    data = Path(shutil.copytree(tiny_world[0], tmp_path / "data"))
    conllu = data / "ud/es_gsd-ud-test.conllu"
    lines = conllu.read_text(encoding="utf-8").split("\n")
    bad_line = next(i for i, line in enumerate(lines, 1) if line[:1].isdigit())
    lines[bad_line - 1] = "\t".join(lines[bad_line - 1].split("\t")[:9])
    conllu.write_text("\n".join(lines), encoding="utf-8")
    (data / "xnli/test-es.tsv").write_bytes(b"premise\thypothesis\tlabel\nun\xe9\tdos\tneutral\n")
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes().replace(b"embeddings.word_embeddings", b"embeddings.word_embeddingz"))
    problems = preflight_problems(_experiment(data, model_copy))
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"model 'tiny': {weights}: 1 encoder weights missing")
    assert f"{conllu}:{bad_line}: expected 10 tab-separated CoNLL-U columns, got 9" in problems
    assert f"{data / 'xnli/test-es.tsv'}:2: not UTF-8 (byte 0xe9 at column 3)" in problems


def test_preflight_checks_a_local_awesome_model(tiny_world, tmp_path):
    data, model = tiny_world
    absent = tmp_path / "no-awesome"
    problems = preflight_problems(_experiment(data, model, pairs="awesome", awesome_model=str(absent)))
    assert problems == [f"setting awesome_model: {absent}: model folder not found (a transformers model folder is expected)"]


def test_preflight_requires_only_the_muse_files_the_setting_reads(tiny_world, tmp_path):
    data = Path(shutil.copytree(tiny_world[0], tmp_path / "data"))
    reverse = data / "muse/es-en.txt"
    assert reverse.is_file() and (data / "muse/en-es.txt").is_file()
    reverse.unlink()

    def problems(**settings):
        return preflight_problems(build_experiment(dict(
            models={"tiny": dict(source=str(tiny_world[1]))}, settings=dict(data_dir=str(data), langs=["es"], **settings),
            grids=[dict(model=["tiny"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["toy"], seed=[0])])))

    assert Settings().muse_reverse_file == "en-x-copy" and problems() == []  # the default reads en-es.txt alone
    [line] = problems(muse_reverse_file="x-en")  # the real X-en file is read, so it is required
    assert line.startswith(f"muse (src=es tgt=en): {reverse} not found")
    labels = [need.label for need in required_data("dictionary", "muse", ["es", "fr"], data, "en-x-copy")]
    assert labels == ["muse src=en tgt=es", "muse src=en tgt=fr"]
    assert len(required_data("dictionary", "muse", ["es", "fr"], data, "x-en")) == 4
    [bad] = describe_missing("dictionary", "muse", ["es"], data, muse_reverse_file="es-en")
    assert bad.startswith("setting muse_reverse_file='es-en' must be one of")


def test_preflight_needs_no_fast_align_for_the_default_backend(tiny_world, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "systran_align" else real_find_spec(name, *args))
    monkeypatch.setenv("PATH", "/nonexistent")  # neither systran-align nor the programs
    assert preflight_problems(_experiment(*tiny_world, pairs="fastalign")) == []
    assert fastalign_missing_here(["numpy"]) is None and "found neither" in fastalign_missing_here(["auto"])


def test_preflight_says_fast_align_is_checked_on_the_driver_only(tiny_world, monkeypatch):
    from trainables import pairs

    def missing(choice: str = "auto") -> str:
        raise TrialInputError("pair source 'fastalign' needs fast_align: found neither")

    monkeypatch.setattr(pairs, "fastalign_backend", missing)
    problems = preflight_problems(_experiment(*tiny_world, pairs="fastalign"))
    assert problems == [f"pair source 'fastalign' needs fast_align: found neither ({FASTALIGN_DRIVER_NOTE})"]
    assert fastalign_missing_here() == "pair source 'fastalign' needs fast_align: found neither"
    monkeypatch.setattr(pairs, "fastalign_backend", lambda choice="auto": "fast_align")
    assert preflight_problems(_experiment(*tiny_world, pairs="fastalign")) == [] and fastalign_missing_here() is None


def test_fast_align_is_asked_of_every_node_of_a_running_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # a Ray of its own
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        expected = fastalign_missing_here()  # one node, this machine: the same environment as here
        found = fastalign_node_problems(nodes, timeout=60)
        assert found == ([] if expected is None else [f"node {nodes[0]['NodeManagerAddress']} "
                                                      f"({nodes[0]['NodeID'][:8]}): {expected}"])
        # run_sweep asks the nodes of a cluster it joins, and refuses to start where one lacks it
        from sweep.experiment import ExperimentError
        from sweep.runner import check_fastalign_nodes

        check_fastalign_nodes([{"pairs": "dico"}], nodes=[])  # no FastAlign trial: nothing is asked
        import sweep.preflight

        def asked(*args, **kwargs):
            raise AssertionError("the nodes were asked about fast_align for trials that use the numpy backend")

        real_probe, sweep.preflight.fastalign_node_problems = sweep.preflight.fastalign_node_problems, asked
        try:  # numpy, the default, needs nothing of any node
            check_fastalign_nodes([{"pairs": "fastalign", "settings": {}}], nodes, timeout=60)
        finally:
            sweep.preflight.fastalign_node_problems = real_probe
        auto = {"pairs": "fastalign", "settings": {"fastalign_backend": "auto"}}
        if expected is None:
            check_fastalign_nodes([auto], nodes, timeout=60)
        else:
            with pytest.raises(ExperimentError, match=r"cannot run on 1 of the cluster's 1 nodes: node "):
                check_fastalign_nodes([auto], nodes, timeout=60)
    finally:
        ray.shutdown()


def test_sweep_command_stops_before_ray_on_a_bad_file(tiny_world, tmp_path, capsys):
    data = Path(shutil.copytree(tiny_world[0], tmp_path / "data"))
    (data / "muse/en-es.txt").write_text("".join(f"a{i} b{i} c{i}\n" for i in range(50)), encoding="utf-8")
    exp = tmp_path / "exp.py"
    exp.write_text(
        f"EXPERIMENT = dict(models={{'tiny': dict(source={str(tiny_world[1])!r})}}, "
        f"settings=dict(data_dir={str(data)!r}, langs=['es']), grids=[dict(model=['tiny'], task=['udpos'], "
        "realign=['none'], pairs=['dico'], corpus=['toy'], seed=[0])])\n"
    )
    assert sweep_main([str(exp), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {data / 'muse/en-es.txt'}:1: expected 'source<TAB or space>target', got 3 fields "
                   "(50 of 50 lines are malformed)"]


def test_the_node_probe_reads_the_settings_a_trial_runs_with(monkeypatch):
    """check_fastalign_nodes asks about the backend of the trial's settings with its preset
    applied, as preflight does, not about the raw settings' value."""
    import dataclasses

    import sweep.preflight
    import trainables.settings
    from sweep.runner import check_fastalign_nodes

    asked: list[set[str]] = []
    monkeypatch.setattr(sweep.preflight, "fastalign_node_problems",
                        lambda nodes, timeout, backends: asked.append(set(backends)) or [])
    check_fastalign_nodes([{"pairs": "fastalign", "model": "m", "settings": {}}], nodes=[], timeout=1)
    assert asked == []  # the default backend (numpy) needs nothing of a node
    programs = lambda settings, model: dataclasses.replace(settings, fastalign_backend="fast_align")  # noqa: E731
    monkeypatch.setitem(trainables.settings.PRESETS, "paper", programs)
    check_fastalign_nodes([{"pairs": "fastalign", "model": "m", "settings": {}}], nodes=[], timeout=1)
    assert asked == [{"fast_align"}]
