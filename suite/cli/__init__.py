"""`ctbench validate | list | run | collect | status | compare | gate | report`: one command from spec to report.

`app.py` holds the parser and `main`; each command (or family of commands) is one module that adds its own
sub-parser, as asv does with `asv/commands/`. Every piece of data (cell ids, reasons, paths, spec text) is
printed as plain text: the consoles have rich markup off, and colour is added with `Text` styles only, so a
`[...]` in a message is printed as it is.
"""

from suite.cli.app import build_parser, main
from suite.cli.progress import Reporter

__all__ = ["main", "build_parser", "Reporter"]
