"""The bench studies: 'bench STUDY' dispatch, every study's help, one study end to end, no library import of tests."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from metanlp.bench import studies as studies_module
from metanlp.bench.studies import studies
from metanlp.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
STUDIES = studies()


def squeezed(text: str) -> str:
    """Text without white space: help output wraps lines (even inside hyphenated words)."""
    return "".join(text.split())


def test_bench_help_lists_every_study_with_its_description():
    result = subprocess.run([sys.executable, "-m", "metanlp", "bench", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(STUDIES) >= 10
    for study in STUDIES.values():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", study.name), study.name
        assert squeezed(f"{study.name} {study.description}") in squeezed(result.stdout), study.name
    assert "--quick" in result.stdout  # the grid bench's own options are still there


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_has_a_working_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", name, "--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert output.startswith(f"usage: python -m metanlp bench {name}")
    assert squeezed(STUDIES[name].details.splitlines()[0]) in squeezed(output)


def test_bare_bench_is_the_grid_bench_and_a_study_sees_only_its_own_arguments(monkeypatch):
    parser = build_parser()
    grid = parser.parse_args(["bench", "--quick", "--device", "cpu", "--episodes", "7"])
    assert grid.study is None and getattr(grid, "study_run", None) is None
    assert (grid.quick, grid.device, grid.episodes) == (True, "cpu", 7)

    seen = {}

    def run(args) -> int:
        seen.update(vars(args))
        return 5

    monkeypatch.setattr(studies_module, "_REGISTRY", {})
    study = studies_module.register_study(studies_module.Study(
        "probe", "a probe", lambda parser: parser.add_argument("--episodes", type=int, default=3), run,
    ))
    monkeypatch.setattr(studies_module, "studies", lambda: {study.name: study})
    assert main(["bench", "probe", "--episodes", "4"]) == 5
    assert seen == {"episodes": 4}  # not the grid bench's --quick, --device, ... defaults


def test_a_study_runs_end_to_end_and_writes_only_its_section(tmp_path, monkeypatch, capsys):
    """The cheapest study (a 32-wide from-scratch encoder, a few steps) through the CLI, twice."""
    from metanlp.bench import report

    written = []
    replace_section = report.replace_section

    def spy(path, marker, heading, body):
        written.append(marker)
        return replace_section(path, marker, heading, body)

    monkeypatch.setattr(report, "replace_section", spy)
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nHand-written notes.\n\n## Other\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    arguments = ["bench", "pretraining-synthetic", "--seeds", "0", "--steps", "3", "--episodes", "2",
                 "--output", str(results)]
    for _ in range(2):  # a rerun replaces its section, never adds a second one
        assert main(arguments) == 0
    text = results.read_text()
    assert written == ["synthetic", "synthetic"]
    assert "Hand-written notes." in text and "<!-- other:start -->\nkept\n<!-- other:end -->" in text
    assert text.count("<!-- synthetic:start -->") == 1 and text.count("<!-- synthetic:end -->") == 1
    section = text.split("<!-- synthetic:start -->")[1].split("<!-- synthetic:end -->")[0]
    assert "`python -m metanlp bench pretraining-synthetic --steps 3 --lr 0.005 --seeds 0 --frames 1 --episodes 2`" in section
    rows = [line for line in section.splitlines() if line.startswith(("| tied |", "| untied |"))]
    assert len(rows) == 2
    assert f"wrote {results}" in capsys.readouterr().out


def test_a_bad_study_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "maml-speed", "--repeats", "1"])
    assert exit_info.value.code == 2
    assert "--repeats: must be at least 2, got 1" in capsys.readouterr().err


def gpu_check_commands() -> list[list[str]]:
    """The 'python3 -m metanlp bench' command lines of benchmarks/gpu_check.sh, shell variables filled in."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text().replace("\\\n", " ")
    commands = []
    for line in script.splitlines():
        if line.lstrip().startswith("python3 -m metanlp bench"):
            words = shlex.split(line.split("2>&1")[0].replace("$batch", "64").replace("${batch}", "64"))
            commands.append(words[3:])  # after 'python3 -m metanlp'
    return commands


def test_gpu_check_script_calls_commands_that_exist():
    commands = gpu_check_commands()
    assert [words[:2] for words in commands] == [["bench", "finetune-throughput"], ["bench", "--quick"]]
    parser = build_parser()
    throughput, quick = (parser.parse_args(words) for words in commands)
    assert (throughput.study, throughput.device, throughput.batch_size, throughput.seq_len) == (
        "finetune-throughput", "cuda", 64, 128)
    assert quick.study is None and quick.quick and quick.device == "cuda"


def test_no_library_module_imports_tests():
    offenders = []
    for path in (ROOT / "metanlp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name == "tests" or name.startswith("tests.")]
        if "sys.path" in path.read_text(encoding="utf-8"):
            offenders.append(f"{path.relative_to(ROOT)}: edits sys.path")
    assert not offenders, offenders
