"""Which of `asv continuous`'s changes to trust: read its table, sort each change by the kind of benchmark.

    asv continuous --split ... BASE HEAD | tee out.txt;  python benchmarks/asv_verdict.py out.txt

- trusted: ratio tracks (two sides timed inside one call), op counts (no clock) and accuracy tracks (real cells,
  deterministic). A worse or newly failing one is a regression: exit 1.
- noisy on a shared CPU: absolute times (`time_*`) and memory peaks (`peakmem_*`, the CUDA allocator peak).
  Reported, never a failure here: on a quiet machine read them in the asv table itself.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Change", "classify", "parse_changes", "verdict", "main"]

KINDS: tuple[tuple[str, re.Pattern, bool], ...] = (
    ("ratio track", re.compile(r"\.track_time_ratio\b"), True),
    ("op count", re.compile(r"\.track_ops_per_step_"), True),
    ("accuracy track", re.compile(r"AccuracySuite\.track_"), True),
    ("absolute time", re.compile(r"\.time_"), False),
    ("memory peak", re.compile(r"\.(peakmem_|track_cuda_peak)"), False),
)
MARKS = {"+": "worse", "-": "better", "!": "now failing", "x": "not comparable"}


@dataclass(frozen=True)
class Change:
    mark: str
    before: str
    after: str
    ratio: str
    benchmark: str

    @property
    def what(self) -> str:
        return MARKS.get(self.mark, self.mark)


def classify(benchmark: str) -> tuple[str, bool]:
    """(kind, trusted) of a benchmark name as asv prints it."""
    for kind, pattern, trusted in KINDS:
        if pattern.search(benchmark):
            return kind, trusted
    return "other", False


def parse_changes(text: str) -> list[Change]:
    """The rows of asv's comparison tables whose change column holds a mark (+, -, !, x)."""
    changes = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] not in MARKS:
            continue
        changes.append(Change(*cells))
    return changes


def verdict(changes: list[Change]) -> tuple[list[str], bool]:
    """Lines to print, and whether a trusted benchmark regressed."""
    trusted = [c for c in changes if classify(c.benchmark)[1]]
    noisy = [c for c in changes if not classify(c.benchmark)[1]]
    regressed = [c for c in trusted if c.mark in ("+", "!")]
    lines = ["asv verdict: trust the ratio tracks, op counts and accuracy tracks; absolute times and memory "
             "peaks move with the machine's load"]
    for title, group in (("trusted", trusted), ("noisy on a shared CPU", noisy)):
        lines.append(f"  {title}: " + (f"{len(group)} change(s)" if group else "no change"))
        lines += [f"    {c.what:>14}  ×{c.ratio:<6} {classify(c.benchmark)[0]:<14} {c.benchmark}  "
                  f"({c.before} → {c.after})" for c in group]
    if regressed:
        lines.append(f"REGRESSION: {len(regressed)} trusted benchmark(s) worse or failing")
    elif noisy:
        lines.append("no trusted benchmark regressed; the absolute changes above are for a quiet machine to confirm")
    else:
        lines.append("no benchmark changed beyond the factor")
    return lines, bool(regressed)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/asv_verdict.py ASV_CONTINUOUS_OUTPUT", file=sys.stderr)
        return 2
    try:
        text = Path(argv[0]).read_text(errors="replace")
    except OSError as exc:
        print(f"asv_verdict: cannot read {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    lines, regressed = verdict(parse_changes(text))
    print("\n".join(lines))
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
