"""The one progress bar every long step shows: description, bar, done/total, time elapsed.

>>> import io
>>> with progress_bar(Console(file=io.StringIO())) as bar:
...     task = bar.add_task("provisioning", total=2)
...     bar.advance(task, 2)
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console | None = None) -> Progress:
    """A transient bar (gone once done) on ``console`` (rich's default console if None)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
