"""The command line's help and hints (issue 39 items 8 and 10): every option of `bench`, `train`
and `info` has a description and shows its default, `info --help` prints help (not the build),
the top-level help lists the commands; `train --png` and `bench --plot` without matplotlib say so
at the start; bench progress lines go to stderr; the license metadata."""

from __future__ import annotations

import argparse
import builtins
import os
import re
import subprocess
import sys

import pytest

from pixelkernels import __main__ as cli
from pixelkernels.bench import cli as bench_cli
from pixelkernels.bench import rows as bench_rows
from pixelkernels.models import evaluate as evaluate_mod
from pixelkernels.models import train as train_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {"bench": bench_cli.parser, "train": train_mod.parser, "evaluate": evaluate_mod.parser,
           "info": cli.info_parser}


def _options(p: argparse.ArgumentParser):
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_a_description_and_shows_its_default(name):
    p = PARSERS[name]()
    fmt = p._get_formatter()
    for a in _options(p):
        assert a.help and len(a.help) > 10, f"{name} {a.dest}: no description"
        shown = fmt._get_help_string(a)
        if a.option_strings and not isinstance(a, argparse._StoreTrueAction) and not a.required:
            assert "default" in shown, f"{name} {a.option_strings[0]}: the default is not shown ({shown!r})"
    text = p.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text


def test_info_help_prints_help_not_the_build(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["info", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pixelkernels info") and '"version"' not in out


def test_top_level_help_lists_every_command_on_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("bench", "train", "info"):
        assert re.search(rf"^  {cmd} +\S.*$", out, re.M), cmd
    with pytest.raises(SystemExit) as e:
        cli.main(["nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def _no_matplotlib(monkeypatch):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_train_png_without_matplotlib_says_so_at_the_start(monkeypatch, tmp_path, capsys):
    _no_matplotlib(monkeypatch)
    png = tmp_path / "loss.png"
    seen = {}

    def fake_train(name, **kw):  # the hint must come before the training starts
        seen["err"], seen["png_path"] = capsys.readouterr().err, kw["png_path"]
        return {"losses": [1.0, 0.5], "step_s": 0.01}

    monkeypatch.setattr(train_mod, "train", fake_train)
    assert train_mod.main(["menet", "--steps", "2", "--png", str(png)]) == 0
    assert f"--png needs matplotlib: pip install 'pixelkernels[plots]' ({png} will not be drawn)" in seen["err"]
    assert seen["png_path"] is None and not png.exists()
    assert train_mod._plot([1.0], str(png), "t") is False  # the library function says the same
    assert "--png needs matplotlib" in capsys.readouterr().err


def test_bench_plot_without_matplotlib_says_so_at_the_start(monkeypatch, capsys):
    monkeypatch.setattr(bench_cli, "_have_matplotlib", lambda: False)
    seen = {}

    def fake_run(*args, **kw):
        seen["err"] = capsys.readouterr().err
        return []

    monkeypatch.setattr(bench_cli, "run_bench", fake_run)
    assert bench_cli.main(["--device", "cpu", "--op", "region_stats", "--workload", "W2", "--plot", "x.png"]) == 0
    assert "--plot needs matplotlib: pip install 'pixelkernels[plots]'" in seen["err"]


def test_progress_lines_only_for_long_steps():
    lines = []

    class Stream:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    p = bench_rows.Progress(stream=Stream(), min_s=1.0)
    p("1/2 region_stats:W2: start")
    p("  short step", 0.2)
    p("  long step", 3.0)
    text = "".join(lines)
    assert re.search(r"^\[bench +0m0\ds\] 1/2 region_stats:W2: start$", text, re.M)
    assert "short step" not in text and "long step (3.0 s)" in text


def test_bench_reports_each_row_on_stderr_as_it_starts_and_finishes():
    """The table on stdout, the progress on stderr (a tiny run: one row, short budget)."""
    args = ["bench", "--quick", "--no-memory", "--device", "cpu", "--op", "region_stats", "--workload", "W2"]
    code = f"import pixelkernels.__main__ as m, sys; sys.exit(m.main({args!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\[bench +\d+m\d\ds\] 1/1 region_stats:W2 \[.*\]: start \(reference, baseline", r.stderr, re.M)
    assert re.search(r"^\[bench +\d+m\d\ds\] 1/1 region_stats:W2: done in \d+\.\d s$", r.stderr, re.M)
    assert "[bench" not in r.stdout and re.search(r"^region_stats +W2 +reference ", r.stdout, re.M)


def test_license_metadata():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert text.startswith("BSD 3-Clause License") and "Copyright (c) 2026, the pixelkernels authors" in text
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup = f.read()
    assert 'license="BSD-3-Clause"' in setup and 'license_files=["LICENSE"]' in setup
    assert '"plots": ["matplotlib"]' in setup
