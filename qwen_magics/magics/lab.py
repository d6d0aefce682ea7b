"""``%qwen_lab`` / ``%%qwen_lab``: the sampling lab on the local model (see ``qwen_magics.sampling``).

The widget module imports ipywidgets and numpy, so it is imported on first use.
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import QwenMagicsError
from .surface import SurfaceMagics


def make_lab(prompt: str, model: str = "local", *, chat: bool = False, seed: int | None = None,
             context: int = 4096, **settings: object):
    """A :class:`~qwen_magics.widgets.lab.LabWidget` over a new lab (errors as :class:`QwenMagicsError`)."""
    from ..sampling.lab import open_lab
    from ..widgets.lab import LabWidget

    return LabWidget(open_lab(prompt, model, chat=chat, seed=seed, context=context, **settings))


@magics_class
class QwenLabMagics(SurfaceMagics):
    """The lab magic; the local context size comes from the extension's one configuration (its context)."""

    @magic_arguments()
    @argument("-m", "--model", default="local", help="local, local:0.5b, local:1.5b or local:/path/model.gguf")
    @argument("--chat", action="store_true", help="put the prompt in the model's chat template as a user turn")
    @argument("--seed", type=int, help="seed of Sample and Run to end (default: random)")
    @argument("-t", "--temperature", type=float)
    @argument("--top-k", type=int)
    @argument("--top-p", type=float)
    @argument("--min-p", type=float)
    @argument("--repetition-penalty", type=float)
    @argument("--presence-penalty", type=float)
    @argument("prompt", nargs="*", help="the text the model continues (or the cell, with %%qwen_lab)")
    @no_var_expand
    @line_magic
    def qwen_lab(self, line: str, cell: str | None = None):
        """Step through generation on the local Qwen, one token at a time, over its whole next-token distribution.

        Bars show the likeliest next tokens (click one to take it); sliders reshape them with no model call;
        Sample, Greedy, Back, Sample 100 and Run to end move.  The result answers from Python too:
        ``lab.distribution()``, ``lab.entropy()``, ``lab.set(top_p=0.9)``, ``lab.step()``, ``lab.back()``,
        ``lab.draw(100)``, ``lab.text``.

        Examples::

            %qwen_lab -m local:0.5b The capital of France is
            %qwen_lab --chat --temperature 0.7 Name a colour.
        """
        args = parse_argstring(self.qwen_lab, line)
        prompt = cell if cell is not None else " ".join(args.prompt)
        if cell is not None and args.prompt:
            raise UsageError("%%qwen_lab takes the prompt from the cell: leave it off the first line")
        if not prompt.strip():
            raise UsageError("%qwen_lab needs a prompt: %qwen_lab The capital of France is")
        settings = {name: value for name, value in (
            ("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p), ("min_p", args.min_p),
            ("repetition", args.repetition_penalty), ("presence", args.presence_penalty)) if value is not None}
        try:
            return make_lab(prompt, args.model, chat=args.chat, seed=args.seed,
                            context=self.context.config.local_context, **settings)
        except QwenMagicsError as exc:
            raise UsageError(exc.line()) from None

    @no_var_expand
    @cell_magic("qwen_lab")
    def qwen_lab_cell(self, line: str, cell: str):
        """%%qwen_lab [options]: the cell is the prompt (see %qwen_lab?)."""
        return self.qwen_lab(line, cell)
