"""The base of the magic classes beside ``%%qwen``'s: each holds the extension's shared settings, not the magic."""

from __future__ import annotations

from IPython.core.magic import Magics

from ..options.context import Context


class SurfaceMagics(Magics):
    """A magic class over the extension's :class:`~qwen_magics.options.context.Context`, which
    ``%%qwen``'s magic makes once and ``load_ipython_extension`` hands to each."""

    def __init__(self, shell, context: Context) -> None:
        super().__init__(shell=shell)
        self.context = context
