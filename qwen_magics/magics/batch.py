"""``%qwen_batch``: the account's Model Studio Batch jobs: list, status, wait, collect, cancel.

A job outlives the kernel that submitted it; what ``%%qwen_map --batch``
submitted is found again through the run log (:mod:`qwen_magics.batch.maps`),
so collecting it gives the map's DataFrame, aligned with the original rows,
in any kernel.  The work is in :mod:`qwen_magics.batch`, imported on first use.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import InvalidInput, QwenMagicsError
from ..options.build import endpoint_for
from .surface import SurfaceMagics


@magics_class
class QwenBatchMagics(SurfaceMagics):
    """``%qwen_batch`` over the extension's shared settings (its :class:`~qwen_magics.options.context.Context`)."""

    @magic_arguments()
    @argument("action", nargs="?", default="list", choices=["list", "status", "wait", "collect", "cancel"],
              help="list (default): recent jobs; status, wait, collect or cancel one job")
    @argument("job", nargs="?", help="the job's id (batch_...), as %%qwen_map --batch or the list shows it")
    @argument("-o", "--out", metavar="NAME", help="with collect: also store the DataFrame in NAME (always _qwen_map)")
    @argument("-n", type=int, default=20, metavar="N", help="with list: the last N jobs (default 20)")
    @argument("--region", help="the jobs' region (default: the map's, else %%config QwenMagics.region)")
    @argument("--base-url", help="an OpenAI-compatible server with the Batch API instead")
    @line_magic
    def qwen_batch(self, line: str):
        """Model Studio Batch jobs: half-price answers within 24 hours, as ``%%qwen_map --batch`` submits them.

        Examples::

            %qwen_batch                          the last 20 jobs: id, status, counts, created, map
            %qwen_batch status batch_1a2b        one job's status and counts
            %qwen_batch wait batch_1a2b          follow it until it ends (Ctrl-C stops waiting, not the job)
            %qwen_batch collect batch_1a2b -o df its answers as a DataFrame
            %qwen_batch cancel batch_1a2b        cancel it (rows already answered are kept, and billed)

        A job submitted by ``%%qwen_map --batch`` is collected with all its
        parts into the map's DataFrame, on the original rows' index, and its
        rows go into the run log, so running the map's cell live again sends
        only the rows still unanswered.  Another job gives one row per
        custom id: answer, state, error and tokens.
        """
        args = parse_argstring(self.qwen_batch, line)
        try:
            return getattr(self, f"_{args.action}")(args)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None
        finally:
            self.context.run_log.show_warnings()

    # the actions

    def _list(self, args: argparse.Namespace) -> Any:
        from .. import batch
        from ..runlog.view import Table

        if args.n < 1:
            raise InvalidInput(f"-n {args.n} is not a number of jobs", "give 1 or more, e.g. %qwen_batch -n 50")
        endpoint = self._endpoint(args, None)
        jobs = batch.list_jobs(endpoint, args.n)
        where = endpoint.region or endpoint.base_url
        rows = [[j.id, j.status, f"{j.completed + j.failed:,} of {j.total:,}", f"{j.failed:,}", _when(j.created_at),
                 j.metadata.get("map", "")] for j in jobs]
        title = f"{len(jobs)} latest batch job(s) at {where}" if jobs else f"No batch jobs at {where}"
        return Table(title, ["id", "status", "done", "failed", "created", "map"], rows)

    def _status(self, args: argparse.Namespace) -> None:
        from .. import batch

        _, _, endpoint = self._found(args)
        job = batch.status(endpoint, args.job)
        print(job.line() + (f" (map {job.metadata['map']})" if job.metadata.get("map") else ""))

    def _wait(self, args: argparse.Namespace) -> None:
        from .. import batch
        from ..batch import maps
        from ..render.progress import Progress

        record, _, endpoint = self._found(args)
        ids = list(record.parameters["batch_jobs"]) if record is not None else [args.job]
        total = sum(batch.status(endpoint, job_id).total for job_id in ids)
        progress = Progress(total, notebook=self.context.renders_in_notebook(),
                            interval=self.context.config.update_interval)
        progress.begin()
        try:
            statuses = maps.watch(endpoint, ids, progress)
        except KeyboardInterrupt:
            maps.finish(progress, [], maps.stopped_line(ids))
            return
        ended = "; ".join(s.line() for s in statuses)
        maps.finish(progress, [], f"{ended}: collect with %qwen_batch collect {ids[0]} -o NAME")

    def _collect(self, args: argparse.Namespace) -> Any:
        from .. import batch
        from ..datamap import run as datamap
        from ..batch import maps

        if args.out is not None and not args.out.isidentifier():
            raise InvalidInput(f"-o {args.out!r} is not a Python name", "use e.g. -o labels")
        log = self._log()
        record, collected, endpoint = self._found(args)
        if record is None:
            outcomes = batch.collect(endpoint, [args.job])
            states = [o.state for o in outcomes.values()]
            print(f"{len(states):,} rows: " + ", ".join(f"{states.count(s):,} {s}" for s in dict.fromkeys(states)))
            return self._store(maps.plain_frame(outcomes), args.out)
        ids = list(record.parameters["batch_jobs"])
        outcomes = batch.collect(endpoint, ids)
        job = maps.rebuild(record, outcomes, endpoint)
        if log is not None:
            datamap.recall(job, log)
        where = dict(kernel_id=self.context.run_log.kernel_id(), notebook=os.environ.get("JPY_SESSION_NAME") or None)
        maps.settle(job, outcomes, record.parameters["positions"], log, where,
                    parameters=record.parameters.get("parameters"), write=not collected)
        line = datamap.summary(job)
        if not collected:
            maps.mark_collected(job, ids, log, line, where)
        print(line)
        return self._store(datamap.outcome(job), args.out)

    def _cancel(self, args: argparse.Namespace) -> None:
        from .. import batch

        _, _, endpoint = self._found(args)
        job = batch.cancel(endpoint, args.job)
        print(f"{job.line()}: rows answered before the cancel are kept (and billed); "
              f"collect them with %qwen_batch collect {job.id} -o NAME once it is cancelled")

    # helpers

    def _found(self, args: argparse.Namespace) -> tuple[Any, bool, Any]:
        """The job's submitted record in the run log (or None), whether it was collected, and where the job is."""
        from ..batch import maps

        if not (args.job or "").strip():
            raise InvalidInput(f"%qwen_batch {args.action} needs a job id",
                               f"write e.g. %qwen_batch {args.action} batch_1a2b (%qwen_batch lists the jobs)")
        args.job = args.job.strip()
        record, collected = maps.remembered(self._log(), args.job)
        return record, collected, self._endpoint(args, record)

    def _endpoint(self, args: argparse.Namespace, record: Any) -> Any:
        """Where the jobs are: the options if given, else where the map sent them (its record), else the default."""
        if record is None or args.region or args.base_url:
            return endpoint_for(self.context.config, args.region, args.base_url, None)
        where = record.endpoint or ""
        url = where if "://" in where else None
        return endpoint_for(self.context.config, None if url else where or None, url, None)

    def _log(self) -> Any:
        return self.context.run_log.log() if self.context.config.log else None

    def _store(self, frame: Any, out: str | None) -> Any:
        self.shell.user_ns["_qwen_map"] = frame
        if out:
            self.shell.user_ns[out] = frame
        return frame


def _when(created_at: int) -> str:
    return datetime.fromtimestamp(created_at).strftime("%Y-%m-%d %H:%M") if created_at else ""
