"""``%%qwen_eval``: score sampling settings on a dataset (and ``qwen_magics.evaluate``).

The magic parses options and wires: settings from the list options (as
``%%qwen_compare`` reads them), rows and requests from the map's machinery
(:mod:`qwen_magics.evaluation.run`), scores and statistics
(:mod:`~qwen_magics.evaluation.scorers`, :mod:`~qwen_magics.evaluation.stats`),
and the result (:mod:`~qwen_magics.evaluation.report`).  Those are imported on first use, so loading
the extension imports neither scipy nor pandas.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import shlex
from typing import Any, Mapping

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .. import runner
from ..backends import backend_for
from ..errors import InvalidInput, QwenMagicsError
from .map import budget_end_line, budget_for, data_argument, data_of, follow_batch, progress_view, run_context
from .surface import SurfaceMagics
from ..options.declare import options_from, parse_options, request_arguments, words
from ..options.settings import AXES, Setting, settings_of
from ..options.value import Options


@magics_class
class QwenEvalMagics(SurfaceMagics):
    """``%%qwen_eval`` over the extension's shared settings (its :class:`~qwen_magics.options.context.Context`)."""

    @magic_arguments()
    @data_argument
    @argument("--expect", metavar="COLUMN", help="the column holding each row's expected answer")
    @argument("--score", default="exact", metavar="SCORER",
              help="exact (default), contains, number, regex:PATTERN, choice, json:FIELD, judge, py:NAME")
    @argument("--repeats", type=int, default=1, metavar="N", help="ask each row N times per setting (default 1)")
    @argument("--judge", metavar="MODEL", help="with --score judge: the model that grades (default: the default model)")
    @argument("--rubric", metavar="TEXT", help="with --score judge: how to grade")
    @request_arguments(lists=True)
    @argument("--variants", action="store_true",
              help="the cell holds several prompts, separated by lines of only ---: each is a setting (an axis)")
    @argument("--grid", action="store_true", help="cross the lists (e.g. a temperature x top_p grid) instead of "
              "zipping them")
    @argument("-f", "--format", choices=["text", "json"], default="text", help="text (default), or json: JSON mode")
    @argument("--concurrency", type=int, default=8, metavar="N", help="requests in flight at most (default 8)")
    @argument("--limit", type=int, metavar="N", help="the first N rows only")
    @argument("--dry-run", action="store_true", help="show the request count, an input-token estimate and the first "
              "prompts; send nothing")
    @argument("--fresh", action="store_true", help="send every request, even those answered before (in the run log)")
    @argument("--budget", type=float, metavar="AMOUNT", help="spend at most AMOUNT (in the price's currency): "
              "refused before sending if the estimate is over it; requests that would go over it are not run")
    @argument("-o", "--out", metavar="NAME", help="also store the result in NAME (always in _qwen_eval)")
    @argument("--batch", action="store_true", help="send the requests as Model Studio Batch jobs (half price, within "
              "24 hours); the judge's requests go in a second job")
    @no_var_expand
    @cell_magic
    def qwen_eval(self, line: str, cell: str):
        """Score the cell's prompt over the rows of DATA at each setting, with 95% intervals.

        Examples::

            %%qwen_eval sums --expect total --score number -t 0,0.7,1.3 --repeats 3
            What is {a} + {b}? Answer with the number.

            %%qwen_eval reviews --expect label --score judge --judge qwen-plus -m qwen-flash,qwen-plus
            Label the sentiment of this review: {text}

        Settings are given as in %%qwen_compare (lists zipped, --grid crosses
        them, --variants takes the cell's phrasings separated by lines of
        ---); rows as in %%qwen_map ({column} is the row's value).  The result
        (in _qwen_eval, or NAME with -o) has .table (per setting: n, score,
        low, high, failed, tokens, cost, latency), .answers (every answer and
        its score) and .compare(a, b) (a paired test).  Every answer goes to
        the run log as it arrives: running the cell again sends only what is
        missing (--fresh sends all).
        Python: qwen_magics.evaluate(data, template, expect=..., score=..., temperature=[...]).
        """
        args = parse_options(self.qwen_eval.parser, words(line), "qwen_eval")
        data = data_of(args.data, self.shell.user_ns)
        try:
            return self.run_eval(args, data, cell, self.shell.user_ns)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err

    def evaluate_from_python(self, data: Any, template: str, options: Mapping[str, Any]) -> Any:
        """``qwen_magics.evaluate``: the options as keyword arguments, lists as lists (``temperature=[0, 1]``),
        ``score=`` a scorer's name or a function ``f(answer, expected, row)``."""
        parser = self.qwen_eval.parser
        known = {a.dest for a in parser._actions if a.option_strings}
        tokens, names = ["(data)"], {}
        for key, value in options.items():
            if key not in known:
                raise InvalidInput(f"evaluate() has no option {key!r}",
                                   f"use the long names of %%qwen_eval's options: {', '.join(sorted(known))}")
            flag = "--" + key.replace("_", "-")
            if key == "thinking" and value is not None:
                values = value if isinstance(value, (list, tuple)) else [value]
                tokens += ["--thinking", ",".join("on" if v in (True, "on") else "off" for v in values)]
            elif key in ("score", "schema") and value is not None and not isinstance(value, str):
                name = getattr(value, "__name__", key)  # a function or class given as itself
                names[name] = value
                tokens += [flag, f"py:{name}" if key == "score" else name]
            elif value is True:
                tokens.append(flag)
            elif key in ("stop", "param"):  # repeatable options: the flag once per value
                tokens += [word for v in ([value] if isinstance(value, str) else value) for word in (flag, str(v))]
            elif isinstance(value, (list, tuple)):
                tokens += [flag, ",".join(str(v) for v in value)]
            elif value is not None and value is not False:
                tokens += [flag, str(value)]
        try:
            args = parse_options(parser, tokens, "qwen_eval")
        except UsageError as err:
            raise InvalidInput(str(err)) from None
        return self.run_eval(args, data, template, self.shell.user_ns, names)

    def run_eval(self, args: argparse.Namespace, data: Any, template: str, namespace: dict[str, Any],
                 names: Mapping[str, Any] | None = None) -> Any:
        """Plan and check everything, then run, judge, score; the :class:`~.report.Evaluation`."""
        from ..datamap import run as datamap
        from ..evaluation import run
        from ..evaluation.report import Evaluation
        from ..evaluation.scorers import scorer_for

        try:
            importlib.import_module("pandas")  # the result is made of DataFrames
        except ImportError:
            raise InvalidInput("%%qwen_eval needs pandas, which is not installed", "run `pip install pandas`") from None
        if args.out is not None and not args.out.isidentifier():
            raise InvalidInput(f"-o {args.out!r} is not a Python name", "use e.g. -o scores")
        for flag, value in (("--concurrency", args.concurrency), ("--limit", args.limit), ("--repeats", args.repeats)):
            if value is not None and value < 1:
                raise InvalidInput(f"{flag} must be 1 or more", "e.g. --concurrency 8 --limit 10 --repeats 3")
        lookup = collections.ChainMap(dict(names or {}), namespace)
        scorer = scorer_for(args.score, lookup)
        if args.budget is not None and (args.batch or scorer.name == "judge"):
            raise InvalidInput("--budget bounds the answers of a live evaluation, not a Batch job nor a judge's "
                               "requests", "drop --budget, or drop --batch / --score judge")
        if scorer.name != "judge" and (args.judge or args.rubric):
            raise InvalidInput("--judge and --rubric go with --score judge", "add --score judge, or drop them")
        judge_args = self._judge_options(args) if scorer.name == "judge" else None
        if judge_args is not None:
            from ..options.build import prepare

            sample = prepare(self.context.config, judge_args, "(a check of the judge's options)", namespace).request
            if args.batch:
                from ..batch import check_batchable

                check_batchable([sample])  # the judge's job comes after the answers': refused before those go
        evaluation = run.plan(self.context.config, lambda setting: self._request_options(args, setting),
                              settings_of(args, template.strip()), data, template, namespace, expect=args.expect,
                              scorer=scorer, repeats=args.repeats, limit=args.limit, schema_namespace=lookup,
                              judge_args=judge_args, rubric=args.rubric)
        log = self.context.run_log.log() if self.context.config.log else None
        if args.dry_run:
            print(run.dry_run_text(evaluation, log))
            return None
        job = evaluation.job
        def answer(target: Any, what: str) -> bool:
            return self._batch(target, args, log, what) if args.batch else self._answer(target, args, log)

        for notice in job.notices:
            print(f"⚠ {notice}")
        stopped = answer(job, template)
        lines = [datamap.summary(job)]
        if judge_args is not None and not stopped:
            judged = run.plan_judging(self.context.config, evaluation, namespace)
            if judged is not None:
                answer(judged, "(the judge of an evaluation)")
                lines.append(datamap.summary(judged))
        result = Evaluation(evaluation, run.score_all(evaluation), "; ".join(lines))
        self.shell.user_ns["_qwen_eval"] = result
        if args.out:
            self.shell.user_ns[args.out] = result
        return result

    def _answer(self, job: Any, args: argparse.Namespace, log: Any) -> bool:
        """Answer the job's requests not in the run log, with one progress view; whether it was stopped."""
        from ..datamap import run as datamap

        if log is not None and not args.fresh:
            datamap.recall(job, log)
        concurrency = args.concurrency
        if any(r.protocol == "local" for r in job.requests) and concurrency > 1:
            print(f"⚠ The local model takes requests in turn: --concurrency {concurrency} runs as 1")
            concurrency = 1
        streams = {p: backend_for(p) for p in {r.protocol for r in job.requests}}  # the SDKs imported now, once
        budget = budget_for(job, args.budget)
        progress = self._progress(job, job.requests[0].price if job.requests else None)
        mapping = datamap.MapRun(job, progress, log, concurrency, lambda r: streams[r.protocol](r), budget,
                                 **self._where())
        try:
            runner.block(mapping.run())
        except KeyboardInterrupt:  # the answers so far are kept (and logged); the others stay "not run"
            return True
        finally:
            if budget is not None:
                print(budget_end_line(job, budget))
        return False

    def _batch(self, job: Any, args: argparse.Namespace, log: Any, template: str) -> bool:
        """The job's requests not in the run log as Batch jobs (or those submitted before, still uncollected):
        wait, collect; whether the wait was stopped (the jobs go on at the service)."""
        return follow_batch(self.context, job, log, template, fresh=args.fresh)[0] == "stopped"

    def _progress(self, job: Any, price: Any) -> Any:
        return progress_view(self.context, job, price)

    def _where(self) -> dict[str, Any]:
        return run_context(self.context)

    def _request_options(self, args: argparse.Namespace, setting: Setting) -> Options:
        """One setting's request options: this magic's request options, with the setting's values of the
        compared ones (read as ``%%qwen`` reads its options, as a comparison's column is)."""
        try:
            chosen = self.context.column_options(shlex.join(setting.tokens), "qwen_eval")
        except InvalidInput as err:
            raise InvalidInput(f"{setting.label}: {err}") from None
        given = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in AXES})
        return options_from(given).but(**{name: getattr(chosen, name) for name in AXES})

    def _judge_options(self, args: argparse.Namespace) -> Options:
        """The judge's request options: its model, JSON mode, temperature 0, and where the answers went."""
        return Options(model=args.judge, format="json", temperature=0.0, expand=False, api=args.api,
                       region=args.region, base_url=args.base_url, timeout=args.timeout)
