"""The reproduction results' one row schema end to end: `benchmarks/convert_results.py` turns the
older layouts into it (percent accuracies divided by 100, every other number as it was), the
scripts' runner merges a rerun's rows with the file's, DEML's verdict reads the rows, and
`benchmarks/make_results.py` renders every file in benchmarks/results."""

import json

import pytest
from conftest import BENCHMARKS, load_benchmark

from metajax.bench.results import ROWS_SCHEMA, read, reproduction, row, write

make_results = load_benchmark("make_results")
convert_results = load_benchmark("convert_results")
reproduce = load_benchmark("reproduce")

MACHINE = {"cpu": "Test CPU", "cpu_count": 2, "load_average_1min": 0.5}
CONFIG = {"algo": "protonet", "ways": 5, "shots": 1, "steps": 3000, "meta_batch": 1}


def _old_protonet(accuracy: float) -> dict:
    """A row as benchmarks/common.train_then_score wrote it: accuracy and CI in percent."""
    return {"ways": 5, "shots": 1, "accuracy": accuracy, "ci95": 0.22499528734969323,
            "episodes": 1000, "paper": 98.8, "goal": 97.5, "train_steps": 3000,
            "train_time_s": 785.5, "eval_time_s": 0, "run_wall_time_s": 832.3,
            "steps_per_s": 4.13, "config": CONFIG, "split": {"split": "vinyals"}}


def test_converter_divides_percent_by_100_and_keeps_everything_else(tmp_path):
    old = {"command": "python benchmarks/protonet_omniglot.py --shots 1", "date": "2024-01-02 03:04",
           "machine": MACHINE, "results": [_old_protonet(97.83333539962769)]}
    (tmp_path / "protonet_omniglot.json").write_text(json.dumps(old))
    (tmp_path / "protonet_omniglot.md").write_text(
        "# protonet_omniglot\n\nCommand: `x`  \nDate: d\n\n| setting | ours |\n|---|---|\n"
        "| 5-way 1-shot | 97.83 |\n\nA note on the protocol,\nin two lines.\n")
    # maml_omniglot's layout (fractions, a row per method with its own command), as the
    # background rerun writes it
    maml = {"command": "python benchmarks/maml_omniglot.py --algos maml", "date": "2024-01-03 00:00",
            "machine": MACHINE, "wall_time_s": 90.5, "rows": [{
                "algo": "maml", "accuracy": 0.9763999581336975, "ci95": 0.0026487573837351403,
                "rescored": False, "start_step": 0, "episodes": 600, "wall_time_s": 3026.4,
                "steps_per_s": 4.45, "paper": "98.7 ± 0.4", "command": "python earlier.py",
                "machine": MACHINE,
                "config": {"algo": "maml", "ways": 5, "shots": 1, "steps": 13000}}]}
    (tmp_path / "maml_omniglot_rerun.json").write_text(json.dumps(maml))
    speed = {"command": "python benchmarks/conv_impls.py", "date": "d", "results": [{"x": 1.5}]}
    (tmp_path / "conv_impls.json").write_text(json.dumps(speed))

    convert_results.main([str(p) for p in sorted(tmp_path.glob("*.json"))])
    assert json.loads((tmp_path / "conv_impls.json").read_text()) == speed  # not a reproduction

    result = read(tmp_path / "protonet_omniglot.json")
    assert result.schema == ROWS_SCHEMA and len(result.rows) == 1
    assert (result.command, result.date, result.machine) == (old["command"], old["date"], MACHINE)
    (r,) = result.rows
    assert r["value"] == 97.83333539962769 / 100 and r["ci95"] == 0.22499528734969323 / 100
    assert (r["method"], r["setting"], r["metric"]) == ("protonet", "Omniglot 5-way 1-shot",
                                                        "accuracy")
    assert (r["episodes"], r["steps"], r["wall_time_s"], r["config"]) == (1000, 3000, 832.3, CONFIG)
    assert r["paper"] == {"value": 0.988, "ci95": None, "source": "Snell et al. 2017, Table 1",
                          "note": "60-way training episodes"} and r["goal"] == 0.975
    assert r["details"]["train_time_s"] == 785.5 and r["details"]["split"] == {"split": "vinyals"}
    assert (r["command"], r["date"], r["machine"]) == (old["command"], old["date"], MACHINE)
    md = (tmp_path / "protonet_omniglot.md").read_text()
    assert "| protonet | Omniglot 5-way 1-shot | 97.83 ± 0.22 | 98.80 (Snell et al. 2017" in md
    assert ">= 97.50: met" in md and "A note on the protocol,\nin two lines." in md

    (m,) = read(tmp_path / "maml_omniglot_rerun.json").rows
    assert (m["value"], m["ci95"]) == (0.9763999581336975, 0.0026487573837351403)  # fractions
    assert (m["command"], m["date"]) == ("python earlier.py", maml["date"])
    assert m["paper"]["value"] == 0.987 and m["details"]["start_step"] == 0
    assert not convert_results.convert(tmp_path / "protonet_omniglot.json")  # once only


def test_converter_refuses_a_paper_figure_the_script_does_not_declare(tmp_path):
    old = {"command": "c", "date": "d", "machine": MACHINE,
           "results": [{**_old_protonet(97.0), "paper": 99.9}]}
    (tmp_path / "protonet_omniglot.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="paper"):
        convert_results.convert(tmp_path / "protonet_omniglot.json")


def _row(method, setting, value, command="python benchmarks/x.py", **details):
    return row(method, setting, "accuracy", value, 0.005, episodes=600, steps=100, command=command,
               machine=MACHINE, date="2024-01-01 00:00", details=details)


def test_a_rerun_replaces_its_rows_and_keeps_the_others(tmp_path):
    earlier = [_row("maml", "Omniglot 5-way 1-shot", 0.90, "old maml"),
               _row("anil", "Omniglot 5-way 1-shot", 0.91, "old anil")]
    write(reproduction("demo", earlier, command="old"), tmp_path)
    now = [_row("reptile", "Omniglot 5-way 1-shot", 0.93), _row("maml", "Omniglot 5-way 1-shot", 0.95)]
    rows = reproduce.merged(tmp_path / "demo.json", now, reproduce.rank_by(["maml", "reptile"]))
    assert [(r["method"], r["value"], r["command"]) for r in rows] == [
        ("maml", 0.95, "python benchmarks/x.py"), ("reptile", 0.93, "python benchmarks/x.py"),
        ("anil", 0.91, "old anil")]
    (tmp_path / "old.json").write_text(json.dumps({"command": "c", "results": []}))
    with pytest.raises(ValueError, match="convert_results"):
        reproduce.merged(tmp_path / "old.json", now, None)


def test_deml_verdict_chooses_lambda_on_validation_and_needs_disjoint_intervals():
    deml_omniglot = load_benchmark("deml_omniglot")

    def ablation(ways, name, lam, accuracy, val=None):
        return _row(f"{name} {lam}", f"Omniglot {ways}-way 1-shot", accuracy, ways=ways, row=name,
                    first_order=False, **{"lambda": lam, "val_accuracy": val, "val_ci95": 0.005})

    rows = [ablation(20, "metasgd-conv4", None, 0.87, 0.86),
            ablation(20, "concepts-no-disc", 0.0, 0.91, 0.90),
            ablation(20, "deml", 0.1, 0.882, 0.895), ablation(20, "deml", 0.3, 0.95, 0.88),
            ablation(20, "deml", 1.0, 0.86), ablation(5, "metasgd-conv4", None, 0.97, 0.97),
            ablation(5, "deml", 1.0, 0.975, 0.976)]
    (v20, v5) = deml_omniglot.verdicts(rows)
    # lambda 0.3 has the best test score but not the best validation score; lambda 1 has none
    assert (v20["ways"], v20["lambda"], v20["lambda_candidates"]) == (20, 0.1, [0.1, 0.3])
    assert abs(v20["difference"] - 0.012) < 1e-9 and v20["beats"]  # 1.2 points > 0.5 + 0.5
    assert (v5["lambda"], v5["beats"]) == (1.0, False)  # 0.5 points: the intervals overlap
    line = deml_omniglot.verdict_line(v20)
    assert "lambda = 0.1" in line and "+1.20 points" in line and "-2.80 points from" in line
    assert "**not**" in deml_omniglot.verdict_line(v5)


def test_make_results_renders_every_file_in_benchmarks_results():
    results = BENCHMARKS / "results"
    text = make_results.render(results)
    assert "older layout" not in text, "convert it with python benchmarks/convert_results.py"
    for path in sorted(results.glob("*.json")):
        assert f"[{path.stem}](results/{path.stem}.md)" in text, path.name
        if not make_results.is_other(path.stem):
            for r in read(path).rows:  # every reproduction row, in the one schema
                assert " | ".join(make_results.row_cells(r).values()) in text


def test_commands_drop_a_checkout_specific_default_peer_python():
    cmd = "python benchmarks/maml_speed.py --peer-python /some/checkout/.venv-peers/bin/python --workload B"
    assert make_results._portable(cmd) == "python benchmarks/maml_speed.py --workload B"
    other = "python benchmarks/maml_speed.py --peer-python /opt/torch/bin/python"
    assert make_results._portable(other) == other  # a peer interpreter of one's own choosing stays
