"""The site's speed pages, generated from benchmarks/results/ (issue 39 item 5). Placeholder."""

from __future__ import annotations

from pathlib import Path


def generate(results: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text("# Runs\n\n(generated)\n")
