"""What the surfaces beside ``%%qwen`` are given: the settings and the kernel's shared services, not the magic.

``%%qwen``'s magic class makes one :class:`Context` when the extension loads
and hands it to the other magics (``%%qwen_compare``, ``%qwen_panel``,
``%%qwen_map``, ``%%qwen_eval``, ``%qwen_batch``, ``%qwen_lab``) and, as its
:class:`~qwen_magics.options.config.ConfigView`, to the widgets.  So a surface
depends on the values it reads and the few services it uses, and never on the
magic class or its option parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .config import ConfigView
from .value import Options

if TYPE_CHECKING:
    from ..runlog.recorder import Recorder


@dataclass(frozen=True)
class Context:
    """The settings and services every surface shares, one per loaded extension."""

    config: ConfigView
    """The ``%config QwenMagics`` values, read live: a change applies to every surface's next run."""
    run_log: Recorder
    """Where every run is recorded, and the run log read back."""
    column_options: Callable[..., Options]
    """``column_options(words, magic="qwen")``: a column's (or a compared setting's) ``%qwen`` option words as
    request options, checked as ``%%qwen`` checks them (see :func:`~qwen_magics.options.declare.column_options`)."""
    track_live: Callable[[Any], None]
    """``track_live(shown)``: ``shown`` streamed into the running cell, so the cell's ``Out`` does not show it again."""
    in_kernel: bool = False
    """Whether the shell is a kernel's (a front end shows rich output), as opposed to a terminal."""
    _said: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def renders_in_notebook(self) -> bool:
        """Rich output (a kernel with a front end), or plain text (a terminal): ``display_mode``."""
        if self.config.display_mode == "auto":
            return self.in_kernel
        return self.config.display_mode == "notebook"

    def once(self, notice: str) -> bool:
        """Whether a kernel-wide notice of this kind is due: true the first time any surface asks, then false.

        The no-key notice (``"local model"``: the local model answers) is said once per kernel, by whichever
        magic runs first.
        """
        if notice in self._said:
            return False
        self._said.add(notice)
        return True
