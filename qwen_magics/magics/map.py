"""``%%qwen_map``: one prompt over every row of a dataset, live and resumable (and ``qwen_magics.map``).

The magic parses options and hands the work to :mod:`~qwen_magics.datamap.run`
(rows, requests, the run) and :mod:`~qwen_magics.render.progress` (the live
view), imported on first use, so loading the extension opens no SQLite.  It
reads the request defaults and the run log from the extension's
:class:`~qwen_magics.options.context.Context`, shared with every magic.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Mapping

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from .. import runner
from ..backends import backend_for
from ..display.fragments import notice_bundle
from ..errors import InvalidInput, QwenMagicsError
from ..options.context import Context
from .surface import SurfaceMagics
from ..options.declare import options_from, parse_options, request_arguments, words
from ..options.value import Options

_CONCURRENCY = 8  # rows in flight unless --concurrency says otherwise
data_argument = argument("data", help="the rows: a DataFrame, a Series, a list of strings or dicts, or an "
                         "expression giving one (quote it if it has spaces)")
"""DATA, as ``%%qwen_map`` and ``%%qwen_eval`` take it (read by :func:`data_of`)."""
_MAP_OWN = ("concurrency", "dry_run", "limit", "fresh", "out", "batch", "no_wait", "budget")
"""The options that say how the map runs, not what each row asks."""


@magics_class
class QwenMapMagics(SurfaceMagics):
    """``%%qwen_map`` over the extension's shared settings (its :class:`~qwen_magics.options.context.Context`)."""

    @magic_arguments()
    @data_argument
    @request_arguments()
    @argument("-f", "--format", choices=["text", "json"], default="text",
              help="text (default), or json: JSON mode, each answer parsed into columns (--schema: validated)")
    @argument("--concurrency", type=int, metavar="N", help="rows in flight at most (default 8)")
    @argument("--dry-run", action="store_true", help="show the first three prompts, the row count, the input tokens "
              "(Qwen's tokenizer) and the estimated cost; send nothing")
    @argument("--limit", type=int, metavar="N", help="run the first N rows only (to try a prompt)")
    @argument("--budget", type=float, metavar="AMOUNT", help="spend at most AMOUNT (in the price's currency): "
              "refused before sending if the estimate is over it; rows that would go over it are not run")
    @argument("--fresh", action="store_true", help="send every row, even those answered before (in the run log)")
    @argument("-o", "--out", metavar="NAME", help="also store the result in NAME (always in _qwen_map)")
    @argument("--batch", action="store_true", help="send the rows as a Model Studio Batch job")
    @argument("--no-wait", action="store_true", help="with --batch: submit and return at once")
    @no_var_expand
    @cell_magic
    def qwen_map(self, line: str, cell: str):
        """Run the cell's prompt once per row of DATA; answers come back as a DataFrame.

        Examples::

            %%qwen_map reviews -m qwen-flash --schema Label -o labels
            Label the sentiment of this review: {text}

            %%qwen_map questions --limit 10 --dry-run
            Answer in one sentence: {item}

        ``{field}`` is the row's value (a column, a dict key; ``{item}`` for a
        list of strings or a Series); other ``{expr}`` come from the notebook;
        ``{{ }}`` are literal.  The result (in ``_qwen_map``, or NAME with
        ``-o``) has the input's columns plus answer, state, error, tokens,
        elapsed and request_id.  Ctrl-C stops and returns the rows so far;
        running the cell again sends only the rows not yet answered (``--fresh``
        sends all).  Python: ``qwen_magics.map(data, template, **options)``.
        """
        args = parse_options(self.qwen_map.parser, words(line), "qwen_map")
        data = data_of(args.data, self.shell.user_ns)
        try:
            return self.run_map(args, options_from(args), data, cell, self.shell.user_ns)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err

    def map_from_python(self, data: Any, template: str, options: Mapping[str, Any]) -> Any:
        """``qwen_magics.map``: request options by their names (``model=``, ``temperature=``, ``stop=[...]``,
        ``schema=`` a name, class or dict) and the map's own (``concurrency=``, ``limit=``, ``fresh=``, ...)."""
        own = {key: options[key] for key in _MAP_OWN if key in options}
        request = Options.of({"format": "text", **{k: v for k, v in options.items() if k not in own}}, "map()")
        defaults = vars(parse_options(self.qwen_map.parser, ["(data)"], "qwen_map"))
        return self.run_map(argparse.Namespace(**{**defaults, **own}), request, data, template, self.shell.user_ns)

    def run_map(self, args: argparse.Namespace, request: Options, data: Any, template: str,
                namespace: dict[str, Any]) -> Any:
        """The map's own options in ``args``; what every row's request asks for in ``request``."""
        from ..datamap import run as datamap

        if args.budget is not None and args.batch:
            raise InvalidInput("--budget bounds a live map, not a Batch job", "drop --budget, or drop --batch")
        if args.no_wait and not args.batch:
            raise InvalidInput("--no-wait goes with --batch", "add --batch, or drop --no-wait to map the rows live")
        if args.out is not None and not args.out.isidentifier():
            raise InvalidInput(f"-o {args.out!r} is not a Python name", "use e.g. -o labels")
        if (args.concurrency is not None and args.concurrency < 1) or (args.limit is not None and args.limit < 1):
            raise InvalidInput("--concurrency and --limit must be 1 or more", "e.g. --concurrency 8 --limit 10")
        job = datamap.plan(self.context.config, request, data, template, namespace, args.limit)
        log = self.context.run_log.log() if self.context.config.log else None
        if args.dry_run:
            print(datamap.dry_run_text(job, log))
            return None
        if args.batch:
            return self._batch(job, args, log, template)
        concurrency = args.concurrency or _CONCURRENCY
        if job.requests and job.requests[0].protocol == "local":
            if concurrency > 1 and args.concurrency is not None:  # said only to whom asked for more
                job.notices.append(f"The local model takes rows in turn: --concurrency {concurrency} runs as 1")
            concurrency = 1
        self._notices(job)
        if log is not None and not args.fresh:
            datamap.recall(job, log)
        budget = budget_for(job, args.budget)
        backend = backend_for(job.requests[0].protocol) if job.requests else None  # the SDK imported now, once
        progress = self._progress(job, job.requests[0].price if job.requests else None)
        mapping = datamap.MapRun(job, progress, log, concurrency, backend, budget, **self._where())
        try:
            runner.block(mapping.run())
        except KeyboardInterrupt:  # the rows answered so far are kept; the others stay "not run"
            pass
        if budget is not None:
            print(budget_end_line(job, budget))
        return self._store(datamap.outcome(job), args.out)

    def _batch(self, job: Any, args: argparse.Namespace, log: Any, template: str) -> Any:
        """The rows not yet answered as Batch jobs (or those submitted before, still uncollected): wait, collect."""
        from .. import batch
        from ..datamap import run as datamap

        batch.check_batchable(job.requests)  # before the notices, the log or anything is sent
        self._notices(job)
        ended, ids = follow_batch(self.context, job, log, template, fresh=args.fresh, no_wait=args.no_wait)
        if ended == "submitted":
            return ids
        if ended == "stopped":
            return None
        if ended == "nothing to send":
            print(datamap.summary(job))
        return self._store(datamap.outcome(job), args.out)

    def _notices(self, job: Any) -> None:
        """The job's notices, shown as %%qwen shows its own; the no-key one once per kernel, whichever magic
        says it first (the context keeps what was said)."""
        lines = list(job.notices)
        if job.model_notice and self.context.once("local model"):
            lines.insert(0, job.model_notice)
        for line in lines:
            if self.context.renders_in_notebook():
                display(notice_bundle(line), raw=True)
            else:
                print(f"⚠ {line}")

    def _progress(self, job: Any, price: Any) -> Any:
        return progress_view(self.context, job, price)

    def _where(self) -> dict[str, Any]:
        return run_context(self.context)

    def _store(self, result: Any, out: str | None) -> Any:
        self.shell.user_ns["_qwen_map"] = result
        if out:
            self.shell.user_ns[out] = result
        return result


def progress_view(context: Context, job: Any, price: Any) -> Any:
    """The live view of a job's requests (a map's rows, an evaluation's answers); ``price`` (a
    :class:`~qwen_magics.tokens.prices.Price`) shows the cost in its currency."""
    from ..render.progress import Progress

    return Progress(len(job), notebook=context.renders_in_notebook(),
                    priced=price if price is not None and not price.free else None,
                    interval=context.config.update_interval)


def run_context(context: Context) -> dict[str, Any]:
    """What every request's log record says of where it ran."""
    return dict(kernel_id=context.run_log.kernel_id(), notebook=os.environ.get("JPY_SESSION_NAME") or None)


def follow_batch(context: Context, job: Any, log: Any, template: str, *, fresh: bool,
                 no_wait: bool = False) -> tuple[str, list[str]]:
    """A job's requests not yet answered (not in the run log, unless ``fresh``) as Batch jobs, or the jobs
    they went in before and were not collected: submitted, then followed and collected unless ``no_wait``.

    How it ended (``"nothing to send"``, ``"submitted"``, ``"stopped"`` by Ctrl-C while waiting, the jobs
    going on at the service, or ``"collected"``) and the Batch job ids.
    """
    from .. import batch
    from ..batch import maps
    from ..datamap import run as datamap

    batch.check_batchable(job.requests)  # before the log is read or anything is sent
    if log is not None and not fresh:
        datamap.recall(job, log)
    todo = [p for p, outcome in enumerate(job.outcomes) if outcome is None]
    if not todo:
        return "nothing to send", []
    where = run_context(context)
    earlier = None if fresh else maps.pending(log, job.id)
    if earlier is not None:
        ids = list(earlier.parameters["batch_jobs"])
        positions = [p for p in earlier.parameters["positions"] if job.outcomes[p] is None]
        print(f"These {job.noun} went as batch job(s) {', '.join(ids)} before: following those, not submitting again")
    else:
        ids, positions = maps.submit_map(job, todo, log, template, where), todo
    if no_wait:
        print(maps.submitted_line(ids, len(positions)))
        return "submitted", ids
    progress = progress_view(context, job, batch.batch_price(job.requests[0].price))
    progress.begin(job)
    endpoint = job.requests[0].endpoint
    try:
        maps.watch(endpoint, ids, progress)
    except KeyboardInterrupt:
        maps.finish(progress, [], maps.stopped_line(ids))
        return "stopped", ids
    rows = maps.settle(job, batch.collect(endpoint, ids), positions, log, where)
    line = datamap.summary(job)
    maps.mark_collected(job, ids, log, line, where)
    maps.finish(progress, rows, line)
    return "collected", ids


def data_of(expression: str, namespace: dict[str, Any]) -> Any:
    """The rows a magic's DATA names: the user's own expression, evaluated in their namespace; a failure is one
    line naming it."""
    try:
        return eval(expression, namespace)  # noqa: S307 - the user's own expression, in their namespace
    except NameError as err:
        raise UsageError(f"DATA {expression!r}: name {getattr(err, 'name', None) or expression!r} is not defined: "
                         "define it in a cell first") from None
    except Exception as err:  # noqa: BLE001 - the user's expression failed: one line
        raise UsageError(f"DATA {expression!r} raised {type(err).__name__}: {err}") from None


def budget_for(job: Any, amount: float | None) -> Any:
    """With --budget: the estimate of the job's requests still to send, shown; refused (nothing sent) if over
    the budget; the :class:`~qwen_magics.datamap.budget.Budget` that then bounds the run."""
    if amount is None:
        return None
    from ..datamap import run as datamap
    from ..datamap.budget import Budget

    budget = Budget(amount, job.requests, datamap.input_tokens(job), noun=job.noun)
    todo = [p for p, outcome in enumerate(job.outcomes) if outcome is None]
    budget.check(todo)
    print(budget.plan_line(todo))
    return budget


def budget_end_line(job: Any, budget: Any) -> str:
    """What the budget bought: spent, and how many requests it left unsent."""
    return budget.end_line(sum(1 for p in job.unrun if job.outcomes[p] is None))
