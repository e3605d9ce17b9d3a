"""`metajax train imaml|r2d2|metaoptnet|protomaml`: a 40-step run on Omniglot, 5-way 1-shot, with each
learner's CLI defaults (meta-batch and width shrunk for iMAML and ProtoMAML), clearly beats
chance (20 %) on the test characters; and MetaOptNet refuses the other head's settings."""

import json

import pytest

from metajax.cli import main

COMMON = ["--steps", "40", "--eval-episodes", "100", "--val-every", "0", "--checkpoint-every",
          "40", "--no-progress"]
SMALLER = {"imaml": ["--meta-batch", "4", "--inner-steps", "5", "--test-inner-steps", "5"],
           "protomaml": ["--meta-batch", "8"]}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["r2d2", "metaoptnet", "imaml", "protomaml"])
def test_a_40_step_run_clearly_beats_chance(algo, tmp_path, capsys):
    out = tmp_path / algo
    assert main(["train", algo, "--out", str(out), *COMMON, *SMALLER.get(algo, [])]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["ways"] == 5
    # chance is 0.2; 100 episodes of 75 queries give a CI of about 0.02
    assert summary["accuracy"] > 0.45, summary["accuracy"]


def test_metaoptnet_refuses_settings_of_the_other_head(tmp_path, capsys):
    code = main(["train", "metaoptnet", "--head", "ridge", "--svm-c", "0.5", "--out",
                 str(tmp_path / "r"), *COMMON])
    assert code == 2
    assert "--head ridge does not use --svm-c" in capsys.readouterr().err
