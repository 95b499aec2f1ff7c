"""Number formatting and the small display model (Table / Figure / Note) both templates share."""
from dataclasses import dataclass, field
import math
import re

MIB = 1024.0 ** 2
DASH = "—"


def is_num(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, unit: str = "") -> str:
    """Three significant figures, no exponent for everyday magnitudes; '—' for missing."""
    if not is_num(x):
        return DASH
    x = float(x)
    if x != 0 and abs(x) < 1e-3:
        s = f"{x:.2e}"
    elif abs(x) >= 100:
        s = f"{x:,.0f}"
    else:
        s = f"{x:.3g}"
    return f"{s} {unit}".rstrip()


def mib(nbytes) -> str:
    return f"{float(nbytes) / MIB:,.1f}" if is_num(nbytes) else DASH


def _pct(x) -> str:
    return f"{float(x) * 100:.0f}%" if is_num(x) else "?"


def ratio(r) -> str:
    """'1.23× [1.18, 1.30] n=3/3, CV 2%/4%': the value, its interval over processes, the
    process count and between-process spread of each side (sample/baseline). Without an
    interval (too few processes) the words say so instead."""
    if r is None or not is_num(r.value):
        return DASH
    s = f"{r.value:.2f}×"
    if is_num(r.low) and is_num(r.high):
        s += f" [{r.low:.2f}, {r.high:.2f}]"
        if r.n > 1 or r.n_baseline > 1:
            s += f" n={r.n}/{r.n_baseline}, CV {_pct(r.cv)}/{_pct(r.cv_baseline)}"
    elif getattr(r, "reason", ""):
        s += f" (no interval: {r.reason})"
    return s


_NUMERIC_CELL = re.compile(r"[\d\s.,×\[\]\-+e%]*(n=\d+/\d+, CV [\d?%/]+)?|—|not measured( \(no GPU\))?|baseline|")


@dataclass
class Table:
    columns: list
    rows: list                  # list of lists of display strings
    caption: str = ""
    numeric: bool = True        # False: every column is prose (left-aligned)
    kind: str = "table"

    def aligns(self) -> list:
        """'left' | 'right' per column: numbers right-aligned, prose and the first column left."""
        out = []
        for i, _ in enumerate(self.columns):
            cells = [str(r[i]) for r in self.rows if i < len(r)]
            numeric = self.numeric and i > 0 and all(_NUMERIC_CELL.fullmatch(c) for c in cells)
            out.append("right" if numeric else "left")
        return out


@dataclass
class Figure:
    name: str                   # file name inside the report dir, e.g. "loss_steps.png"
    caption: str
    kind: str = "figure"


@dataclass
class Note:
    text: str
    kind: str = "note"


@dataclass
class Code:
    text: str
    summary: str = ""           # non-empty -> collapsible in HTML
    open: bool = False          # collapsible but shown unfolded (errors)
    kind: str = "code"


@dataclass
class Section:
    title: str
    anchor: str
    intro: str = ""
    blocks: list = field(default_factory=list)
