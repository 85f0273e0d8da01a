"""The site's own Sphinx pieces: ``.. pk-help:: bench`` (a command's ``--help``, from the code)
and the speed pages, regenerated from ``benchmarks/results/`` before every build."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]


def command_help(command: str) -> str:
    """What ``python -m pixelkernels COMMAND --help`` prints, at a fixed width."""
    from pixelkernels.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), _columns(100):
        try:
            main([command, "--help"])
        except SystemExit:
            pass
    return out.getvalue().rstrip()


@contextlib.contextmanager
def _columns(n: int):
    import os

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


class HelpDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        text = command_help(self.arguments[0])
        if not text:
            raise self.error(f"`{self.arguments[0]} --help` printed nothing")
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _speed_pages(app) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import docs_speed

    docs_speed.generate(ROOT / "benchmarks" / "results", Path(app.srcdir) / "speed" / "generated")


def setup(app):
    app.add_directive("pk-help", HelpDirective)
    app.connect("builder-inited", _speed_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
