"""When to draw progress bars: when asked for AND both output streams are terminals.

A bar redraws itself with carriage returns. In a batch log (CI, SLURM, ``| tee``, ``> file``)
nothing interprets them, so every redraw stays: ``make run`` into a file wrote 845 KB of bars.
Lightning draws its bars on stdout and tqdm on stderr, so both must be terminals. Without bars,
each long phase logs one line instead (an epoch, the image decode, the frozen-feature pass).

Imports nothing of pneumocxr: every layer that draws a bar (data, training) may use it.
"""

from __future__ import annotations

import sys
from typing import Any


def is_terminal(stream: Any) -> bool:
    """``stream.isatty()``, False for a stream without one or a closed one."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def show_bars(progress: bool = True) -> bool:
    """True when bars are wanted (``progress``, i.e. no ``--no-progress``) and can be drawn."""
    return bool(progress) and is_terminal(sys.stdout) and is_terminal(sys.stderr)
