"""The command line: help, clear errors, and a tiny train -> summary.json -> eval -> eval.json run."""

import json
import subprocess
import sys

import pytest

from metajax.cli import main
from metajax.registry import LEARNERS

TINY = ["--width", "8", "--steps", "6", "--train-ways", "5", "--queries", "2",
        "--test-queries", "3", "--eval-episodes", "20", "--val-every", "3", "--val-episodes", "8",
        "--checkpoint-every", "3", "--log-every", "2", "--no-progress"]


def test_help_lists_the_algorithms():
    out = subprocess.run([sys.executable, "-m", "metajax", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for algo in LEARNERS:
        assert algo in out


@pytest.mark.parametrize("argv, algo, flag, owner", [
    (["train", "protonet", "--pairs", "4"], "protonet", "--pairs", "siamese"),
    (["train", "protonet", "--fce"], "protonet", "--fce", "matching"),
    (["train", "maml", "--memory-slots", "64"], "maml", "--memory-slots", "mann"),
    (["train", "protonet", "--no-fce"], "protonet", "--fce", "matching"),
])
def test_a_flag_of_another_algorithm_is_refused_naming_both(argv, algo, flag, owner, capsys,
                                                           tmp_path):
    assert main([*argv, "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} does not apply to {algo}" in err and owner in err
    assert not (tmp_path / "run").exists()  # refused before anything ran


@pytest.mark.parametrize("flag", ["--eval-episodes", "--val-episodes", "--meta-batch"])
def test_a_count_below_one_is_refused_before_training(flag, capsys, tmp_path):
    assert main(["train", "protonet", flag, "0", "--out", str(tmp_path / "run")]) == 2
    assert f"{flag} 0: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_print_config_shows_the_algorithms_own_settings_only(capsys):
    from metajax.config import applicable

    assert main(["train", "maml", "--print-config", "--inner-lr", "0.1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["maml"]["inner_lr"] == 0.1 and printed["train"]["meta_batch"] == 32
    names = {k for part in ("data", "train", "eval", "maml") for k in printed[part]}
    assert names == applicable("maml")
    for other in ("fce", "memory_slots", "pairs", "concept_weight", "unroll"):
        assert other not in names
    assert main(["train", "protonet", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["protonet"] == {"width": 64, "backbone": "conv4"}


def test_help_of_an_algorithm_lists_its_flags_with_its_defaults(capsys):
    def help_of(algo: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(["train", algo, "--help"])
        assert done.value.code == 0
        return capsys.readouterr().out

    out = help_of("maml")
    assert "--inner-lr" in out and "--meta-batch" in out
    assert "(default: 32)" in out  # maml's meta-batch, not the base default 1
    assert "--pairs" not in out and "--memory-slots" not in out and "--fce" not in out
    out = help_of("siamese")
    assert "--pairs" in out and "--inner-lr" not in out


def test_runs_written_with_every_field_still_load():
    """config.json files from before settings were per algorithm list every field."""
    import dataclasses

    from metajax.config import Config, make_config
    from metajax.run_dir import check_same_config, load_config

    old = {f.name: f.default for f in dataclasses.fields(Config)
           if f.default is not dataclasses.MISSING}
    old.update(algo="protonet", full_protocol=False, train_ways=30, steps=3000,
               lr_decay_every=1000, fce=True, inner_lr=0.4)  # fce was ignored then
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.json").write_text(json.dumps(old))
        config = load_config(d)
        assert config == make_config("protonet")
        check_same_config(make_config("protonet"), d)  # a resume with the defaults passes
        with pytest.raises(ValueError, match="changed"):
            check_same_config(make_config("protonet", steps=10), d)


def test_unknown_algorithm_and_dataset_name_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["train", "nope", "--out", "x"])
    assert "protonet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "protonet", "--dataset", "imagenet", "--out", "x"])
    assert "omniglot" in capsys.readouterr().err


def test_too_many_ways_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "protonet", "--out", str(tmp_path), "--ways", "5000", *TINY])
    assert code == 2
    assert "ways=5000 but split 'vinyals' val has only 688 classes" in capsys.readouterr().err


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "protonet", "--out", str(out), "--ways", "5", "--shots", "1",
                 "--seed", "7", *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("algo", "dataset", "ways", "shots", "steps", "seed", "accuracy", "ci95",
                "episodes", "wall_time_s", "config", "split"):
        assert key in summary, key
    assert summary["algo"] == "protonet" and summary["seed"] == 7 and summary["episodes"] == 20
    assert summary["split"]["split"] == "vinyals" and summary["split"]["characters"]["test"] == 423
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [2, 4, 6]
    assert [x["step"] for x in lines if "val_accuracy" in x] == [3, 6]
    capsys.readouterr()

    # scored again at its own setting, the restored checkpoint gives the summary's score exactly
    assert main(["eval", str(out), "--no-progress"]) == 0
    again = json.loads((out / "eval.json").read_text())
    assert (again["accuracy"], again["ci95"], again["loss"]) == (
        summary["accuracy"], summary["ci95"], summary["loss"])
    capsys.readouterr()

    assert main(["eval", str(out), "--ways", "3", "--episodes", "12", "--no-progress"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads((out / "eval.json").read_text())
    assert result["ways"] == 3 and result["episodes"] == 12
    assert printed.endswith(f"{result['accuracy']:.4f}")
    assert set(result) >= {"accuracy", "ci95"}
    capsys.readouterr()

    # the validation classes: their own file, their own episodes; eval.json is left as it was
    assert main(["eval", str(out), "--ways", "3", "--episodes", "12", "--split", "val",
                 "--no-progress"]) == 0
    assert "(validation classes)" in capsys.readouterr().out
    val = json.loads((out / "eval_val.json").read_text())
    assert val["part"] == "val" and result["part"] == "test" and val["episodes"] == 12
    assert val["loss"] != result["loss"]
    assert json.loads((out / "eval.json").read_text()) == result

    # training into a finished run's folder is refused before its config.json is overwritten
    config_before = (out / "config.json").read_text()
    assert main(["train", "protonet", "--out", str(out), "--ways", "20", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config_before


def test_eval_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "config.json not found" in capsys.readouterr().err


def test_eval_on_the_validation_classes_of_a_split_without_them_is_a_clear_error(tmp_path, capsys):
    from metajax.config import make_config
    from metajax.run_dir import prepare_run_dir

    prepare_run_dir(make_config("protonet", split="lake", steps=1), tmp_path, resume=False)
    assert main(["eval", str(tmp_path), "--split", "val", "--no-progress"]) == 2
    assert "split 'lake' of omniglot has no validation classes" in capsys.readouterr().err


def test_check_same_config_reads_only(tmp_path):
    from metajax.config import make_config
    from metajax.run_dir import check_same_config, prepare_run_dir

    check_same_config(make_config("reptile"), tmp_path)  # no config.json: nothing to compare
    prepare_run_dir(make_config("reptile", steps=10, log_every=3), tmp_path, resume=False)
    before = (tmp_path / "config.json").read_text()
    check_same_config(make_config("reptile", steps=10, log_every=5), tmp_path)
    with pytest.raises(ValueError, match=r"changed: \['steps'\]"):
        check_same_config(make_config("reptile", steps=20), tmp_path)
    assert (tmp_path / "config.json").read_text() == before


def test_resume_refuses_changed_settings_but_accepts_a_config_older_than_a_new_field(tmp_path,
                                                                                    capsys):
    from metajax.config import make_config
    from metajax.run_dir import prepare_run_dir

    config = make_config("reptile", steps=10)
    prepare_run_dir(config, tmp_path, resume=False)
    with pytest.raises(ValueError, match=r"changed: \['steps'\]"):
        prepare_run_dir(make_config("reptile", steps=20), tmp_path, resume=True)
    # how often a run saves and logs, and where its data is, may change on resume
    prepare_run_dir(make_config("reptile", steps=10, checkpoint_every=7, log_every=3,
                                data_dir="/elsewhere"), tmp_path, resume=True)
    assert json.loads((tmp_path / "config.json").read_text())["checkpoint_every"] == 7
    # so may the evaluation's settings (the trained parameters do not depend on them): said, and
    # recorded in config.json
    prepare_run_dir(make_config("reptile", steps=10, eval_episodes=50, test_inner_steps=9),
                    tmp_path, resume=True)
    assert "(eval_episodes, test_inner_steps)" in capsys.readouterr().err
    assert json.loads((tmp_path / "config.json").read_text())["test_inner_steps"] == 9
    prepare_run_dir(config, tmp_path, resume=True)
    # a run written before `fresh_test_state` existed ran with its default: it resumes
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["fresh_test_state"]
    path.write_text(json.dumps(saved))
    prepare_run_dir(config, tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"changed: \['inner_batch'\]"):
        path.write_text(json.dumps(saved))
        prepare_run_dir(make_config("reptile", steps=10, inner_batch=7), tmp_path, resume=True)
