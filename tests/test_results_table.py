"""benchmarks/make_results.py turns each results layout into rows of one table."""

import json

from conftest import load_benchmark

make_results = load_benchmark("make_results")
collect, render, _portable = make_results.collect, make_results.render, make_results._portable

MACHINE = {"cpu": "Test CPU", "cpu_count": 2, "load_average_1min": 0.5}


def test_rows_from_two_layouts_and_unknown_files_are_listed(tmp_path):
    (tmp_path / "protonet_omniglot.json").write_text(json.dumps({
        "command": "python benchmarks/protonet_omniglot.py", "machine": MACHINE,
        "results": [{"algo": "protonet", "ways": 5, "shots": 1, "accuracy": 97.5, "ci95": 0.2,
                     "episodes": 1000, "paper": 98.8, "train_steps": 3000,
                     "run_wall_time_s": 600.0}]}))
    (tmp_path / "maml_omniglot.json").write_text(json.dumps({
        "command": "python benchmarks/maml_omniglot.py", "machine": MACHINE,
        "rows": [{"algo": "maml", "accuracy": 0.971, "ci95": 0.004, "episodes": 600,
                  "wall_time_s": 90.0, "paper": "98.7 ± 0.4",
                  "config": {"ways": 5, "shots": 1, "steps": 5000, "meta_batch": 32}}]}))
    (tmp_path / "mystery.json").write_text(json.dumps({"x": 1}))
    rows, unknown = collect(tmp_path)
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"protonet", "maml"} and unknown == ["mystery.json"]
    assert by_method["protonet"]["ours"] == "97.50 ± 0.20"
    assert by_method["protonet"]["paper"] == "98.8"
    assert by_method["protonet"]["wall time"] == "10.0 min"
    assert by_method["maml"]["ours"] == "97.10 ± 0.40"  # fractions become percent
    assert "5000 steps x meta-batch 32" in by_method["maml"]["task / setting"]
    assert by_method["maml"]["machine"] == "Test CPU, 2 cores, load 0.5"
    text = render(tmp_path)
    assert "`python benchmarks/maml_omniglot.py`" in text and "mystery.json" in text


def test_commands_drop_a_checkout_specific_default_peer_python():
    cmd = "python benchmarks/maml_speed.py --peer-python /some/checkout/.venv-peers/bin/python --workload B"
    assert _portable(cmd) == "python benchmarks/maml_speed.py --workload B"
    other = "python benchmarks/maml_speed.py --peer-python /opt/torch/bin/python"
    assert _portable(other) == other  # a peer interpreter of one's own choosing stays


def _deml_row(ways, row, lam, accuracy):
    return {"row": row, "lambda": lam, "ways": ways, "shots": 1, "accuracy": accuracy,
            "ci95": 0.5, "episodes": 600, "steps": 2000, "meta_batch": 4, "first_order": False,
            "wall_time_s": 60.0, "paper": "–"}


def test_deml_ablation_keeps_rows_of_earlier_invocations_and_timing_runs_are_not_results(
        tmp_path, monkeypatch):
    deml_omniglot = load_benchmark("deml_omniglot")

    # deml_omniglot reads earlier results through common
    monkeypatch.setattr(load_benchmark("common"), "RESULTS", tmp_path)
    earlier = [_deml_row(20, "metasgd-conv4", None, 80.0), _deml_row(20, "deml", 1.0, 85.0)]
    (tmp_path / "deml_omniglot_steps2000.json").write_text(json.dumps({
        "command": "python benchmarks/deml_omniglot.py --rows metasgd-conv4 deml",
        "machine": MACHINE, "rows": earlier}))
    # this invocation re-runs the lambda=1 row and adds lambda=0.3 and a 5-way row
    now = [_deml_row(5, "deml", 1.0, 97.0), _deml_row(20, "deml", 1.0, 86.0),
           _deml_row(20, "deml", 0.3, 84.0)]
    rows = deml_omniglot.merge_earlier_rows("deml_omniglot_steps2000", now)
    assert [(r["ways"], r["row"], r["lambda"], r["accuracy"]) for r in rows] == [
        (20, "metasgd-conv4", None, 80.0), (20, "deml", 0.3, 84.0), (20, "deml", 1.0, 86.0),
        (5, "deml", 1.0, 97.0)]
    assert rows[0]["command"] == "python benchmarks/deml_omniglot.py --rows metasgd-conv4 deml"
    assert "command" not in rows[2]  # a new row gets the command of the file it is written to

    (tmp_path / "deml_omniglot_20w_timing.json").write_text(json.dumps({
        "command": "python benchmarks/deml_omniglot.py --time-steps 10", "machine": MACHINE,
        "rows": [_deml_row(20, "deml", 1.0, 6.0)]}))
    (tmp_path / "deml_omniglot_steps2000.json").write_text(json.dumps({
        "command": "python benchmarks/deml_omniglot.py", "machine": MACHINE, "rows": rows}))
    methods = [r["method"] for r in collect(tmp_path)[0]]
    assert len(methods) == 4 and "deml ablation: deml, lambda 0.3" in methods
    assert "[deml_omniglot_20w_timing](results/deml_omniglot_20w_timing.md)" in render(tmp_path)


def test_deml_verdict_chooses_lambda_on_validation_and_needs_disjoint_intervals():
    deml_omniglot = load_benchmark("deml_omniglot")

    def row(ways, name, lam, accuracy, val=None):
        return {**_deml_row(ways, name, lam, accuracy), "val_accuracy": val, "val_ci95": 0.5}

    rows = [row(20, "metasgd-conv4", None, 87.0, 86.0), row(20, "concepts-no-disc", 0.0, 91.0, 90.0),
            row(20, "deml", 0.1, 88.2, 89.5), row(20, "deml", 0.3, 95.0, 88.0),
            row(20, "deml", 1.0, 86.0), row(5, "metasgd-conv4", None, 97.0, 97.0),
            row(5, "deml", 1.0, 97.5, 97.6)]
    (v20, v5) = deml_omniglot.verdicts(rows)
    # lambda 0.3 has the best test score but not the best validation score; lambda 1 has none
    assert (v20["ways"], v20["lambda"], v20["lambda_candidates"]) == (20, 0.1, [0.1, 0.3])
    assert abs(v20["difference"] - 1.2) < 1e-9 and v20["beats"]  # 1.2 > 0.5 + 0.5
    assert (v5["lambda"], v5["beats"]) == (1.0, False)  # 0.5 points: the intervals overlap
    line = deml_omniglot.verdict_line(v20)
    assert "lambda = 0.1" in line and "+1.20 points" in line and "-2.80 points from" in line
    assert "**not**" in deml_omniglot.verdict_line(v5)
