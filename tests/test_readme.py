"""What README.md promises. Every decimal figure in it stands in a file of `benchmarks/results/`: as
written, or as the percentage of a fraction there (0.9783 -> 97.83) or the fraction of a
percentage (paper figures included: the results files carry the papers' numbers beside ours).
Its first two commands, install-and-run and the tests, are the ones CI (`.ci/run`) runs."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?(?![\w.])")


def _numbers(value, out: set[float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        out.add(float(value))
    elif isinstance(value, str):
        out.update(float(x) for x in FIGURE.findall(value))
    elif isinstance(value, dict):
        for v in value.values():
            _numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            _numbers(v, out)


def results_numbers() -> set[float]:
    """Every number in the results files: JSON values and the figures in their markdown."""
    out: set[float] = set()
    for f in RESULTS.glob("*.json"):
        _numbers(json.loads(f.read_text()), out)
    for f in RESULTS.glob("*.md"):
        _numbers(f.read_text(), out)
    return out


def _written_as(figure: str, x: float) -> str:
    """`x` written the way `figure` is (same decimals, or same e-notation mantissa)."""
    if "e" in figure:
        mantissa = figure.split("e")[0]
        digits = len(mantissa.split(".")[1])
        m, e = f"{x:.{digits}e}".split("e")
        return f"{m}e{int(e)}"
    return f"{x:.{len(figure.split('.')[1])}f}"


def backed(figure: str, numbers: set[float]) -> bool:
    target = figure if "e" not in figure else _written_as(figure, float(figure))
    return any(_written_as(figure, scale * x) == target
               for x in numbers for scale in (1.0, 100.0, 0.01))


def test_every_readme_figure_stands_in_a_results_file():
    numbers = results_numbers()
    figures = sorted(set(FIGURE.findall((ROOT / "README.md").read_text())))
    assert len(figures) > 50  # the README's tables are read
    missing = [f for f in figures if not backed(f, numbers)]
    assert not missing, f"README figures in no file of benchmarks/results/: {missing}"


def test_the_check_finds_a_figure_that_is_nowhere():
    numbers = {0.9783, 98.8, 1.5e-5}
    assert backed("97.83", numbers) and backed("98.8", numbers) and backed("1.5e-5", numbers)
    assert not backed("97.84", numbers) and not backed("0.98", {0.97})


def readme_commands() -> list[str]:
    """The command lines of the README's first code block (comments left out)."""
    block = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_commands_as_written():
    install_and_run, tests = readme_commands()[:2]
    assert "metajax train" in install_and_run and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_run in ci
    install, run_tests = tests.split(" && ")
    assert install in ci and run_tests in ci
    assert ci.index(install_and_run) < ci.index(install) < ci.index(run_tests)
