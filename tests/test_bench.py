"""metajax.bench, the benchmark machinery: the HLO FLOP count of a matmul, a result written and
read back (JSON and markdown), the reproduction rows' schema (fractions, rendered as percent), and
the keys of `machine_info`."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from metajax.bench import results
from metajax.bench.flops import hlo_flops
from metajax.bench.machine import MACHINE_KEYS, machine_info, speed_machine
from metajax.bench.timing import median_time, time_steps


def test_matmul_flops_are_2mnk():
    m, k, n = 8, 16, 4
    compiled = jax.jit(jnp.matmul).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
    assert hlo_flops(compiled.as_text()) == 2 * m * n * k


def test_result_round_trip(tmp_path):
    rows = [{"algo": "maml", "ways": 5, "accuracy": 98.25, "ci95": 0.3},
            {"algo": "protonet", "ways": 5, "accuracy": 98.5, "ci95": 0.2}]
    result = results.Result(
        name="demo", rows=rows, command="python benchmarks/demo.py", date="2024-01-01 00:00",
        machine={"cpu": "Test CPU", "cpu_count": 2, "jax": "0.0"}, settings={"shots": 1},
        paper={"figure": "Table 1", "source": "Finn et al. 2017"}, goal=">= 95",
        wall_time_s=12.5, extra={"notes": ["a note"]})
    path = results.write(result, tmp_path, plot=lambda payload, png: png.write_text("png"))
    assert path == tmp_path / "demo.json" and (tmp_path / "demo.png").exists()
    back = results.read(path)
    assert back == result
    payload = json.loads(path.read_text())
    assert payload["results"] == rows and payload["command"] == "python benchmarks/demo.py"
    md = (tmp_path / "demo.md").read_text()
    assert md.startswith("# demo\n\nCommand: `python benchmarks/demo.py`  \n")
    assert "Machine: Test CPU, 2 cores, jax 0.0" in md and "Wall time: 12.5 s" in md
    assert "| algo | ways | accuracy | ci95 |" in md
    assert "| maml | 5 | 98.25 | 0.3 |" in md and "| protonet | 5 | 98.5 | 0.2 |" in md


def test_older_layouts_read_back_unchanged(tmp_path):
    """Files in benchmarks/results/ keep their layout: rows under `rows`, a dict of `results`."""
    for name, payload in (("a", {"command": "c", "date": "d", "machine": {}, "rows": [{"x": 1}]}),
                          ("b", {"command": "c", "date": "d", "results": {"p": {"loss": 1.0}},
                                 "meta_training": {}})):
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))
        out = tmp_path / "out"
        results.write(results.read(tmp_path / f"{name}.json"), out)
        assert json.loads((out / f"{name}.json").read_text()) == payload


def test_reproduction_rows_round_trip_and_render_accuracies_as_percent(tmp_path):
    machine = {"cpu": "Test CPU", "cpu_count": 2, "jax": "0.0"}
    common = dict(command="python benchmarks/demo.py", machine=machine, date="2024-01-01 00:00")
    maml = results.row("maml", "Omniglot 5-way 1-shot", "accuracy", 0.9764, 0.0026, episodes=600,
                       steps=13000, paper=results.paper(0.987, "Finn et al. 2017, Table 1", 0.004),
                       goal=0.975, config={"steps": 13000, "meta_batch": 32}, wall_time_s=3026.4,
                       details={"start_step": 0}, **common)
    mse = results.row("maml", "sinusoid 5-shot, MSE after 10 steps", "mse", 0.342, 0.038,
                      goal=0.5, details={"train_time_s": 20.2}, **common)
    diverged = results.row("metasgd", "sinusoid 5-shot, MSE after 5 steps", "mse", None,
                           goal="no worse than MAML", details={"diverged": True, "goal_met": False},
                           command="python benchmarks/earlier.py", date="2023-12-31 00:00")
    result = results.reproduction("demo", [maml, mse, diverged], notes=["A note."],
                                  columns={"meta-batch": "meta_batch", "start": "start_step"},
                                  extra={"verdicts": []}, **common)
    path = results.write(result, tmp_path)
    assert results.read(path) == result
    payload = json.loads(path.read_text())
    assert payload["schema"] == results.ROWS_SCHEMA and payload["verdicts"] == []
    assert [tuple(r) for r in payload["rows"]] == [results.ROW_FIELDS] * 3
    assert payload["rows"][0]["value"] == 0.9764  # a fraction in the file
    md = (tmp_path / "demo.md").read_text()
    assert ("| maml | Omniglot 5-way 1-shot | 97.64 ± 0.26 | 98.70 ± 0.40 (Finn et al. 2017, "
            "Table 1) | >= 97.50: met | 600 | 13000 | 50.4 min | 32 | 0 |") in md
    assert "| 0.342 ± 0.038 | – | <= 0.500: met |" in md and "| 20 s training |" in md
    assert "| diverged | – | no worse than MAML: NOT met |" in md
    assert "A note." in md and "- 2023-12-31 00:00, `python benchmarks/earlier.py`: metasgd" in md


def test_rows_refuse_percent_unknown_fields_and_metrics():
    with pytest.raises(ValueError, match="fractions"):
        results.row("maml", "Omniglot 5-way 1-shot", "accuracy", 97.64)
    with pytest.raises(ValueError, match="fractions"):
        results.row("maml", "Omniglot 5-way 1-shot", "accuracy", 0.9764,
                    paper=results.paper(98.7, "Finn et al. 2017, Table 1"))
    with pytest.raises(TypeError, match="details"):
        results.row("maml", "Omniglot 5-way 1-shot", "accuracy", 0.9764, train_time_s=1.0)
    with pytest.raises(ValueError, match="metric"):
        results.row("maml", "Omniglot 5-way 1-shot", "top5", 0.9764)


def test_machine_info_has_the_documented_keys():
    info = machine_info()
    assert tuple(info) == MACHINE_KEYS
    assert info["cpu_count"] >= 1 and info["jax"] == jax.__version__
    speed = speed_machine(peak_override=100.0)
    assert set(MACHINE_KEYS) <= set(speed)
    assert speed["peak"]["peak_gflops"] == 100.0 and speed["accelerator"]["device_count"] >= 1


def test_timing_helpers():
    calls = []
    out = time_steps(lambda: calls.append(1), lambda x: x, warmup=2, repeats=3)
    assert len(calls) == 1 + 2 + 3 and out["repeats"] == 3 and out["median_s"] >= 0
    assert median_time(lambda i: calls.append(i), 4) >= 0 and calls[-5:] == [0, 1, 2, 3, 4]
