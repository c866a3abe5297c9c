"""Batch transform jobs: Create/Describe/List/StopTransformJob and the job's state machine.

InProgress -> Completed | Failed (a file the model rejected, named in FailureReason); InProgress -> Stopping
-> Stopped. The job runs in a background task (batch/runner.py); its status is written at each transition,
so a restarted server resumes an InProgress job (files whose output exists are not done again) and ends a
Stopping one Stopped. A stopped job's outputs are removed before it is Stopped (SageMaker stores none).

Several front ends on one database: the one that accepted CreateTransformJob runs the job (the record's
``owner``). StopTransformJob on another front end writes Stopping, and the owner cancels the job at its next
``sync``; a job whose owner died (or, at a restart, this front end's own) is claimed by compare-and-set and
resumed, or ended Stopped, by exactly one survivor.

A finished job (Completed, Failed, Stopped) is kept ``--transform-retention-days`` after it ended, then
deleted (``prune``, every front end, at most every tenth of the retention or every hour): SageMaker has no
DeleteTransformJob, and without it a caller could fill the database with finished jobs. A deleted job is not
found by DescribeTransformJob and not listed; its name may be used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from zeroscale.artifacts.fetch import s3_key_problem
from zeroscale.control.arns import Arns
from zeroscale.control.listing import paginate_stored
from zeroscale.control.models import READ_AS, Models, check_environment
from zeroscale.dataproc import Path
from zeroscale.errors import DeployError, ResourceInUse, ResourceNotFound, ValidationException
from zeroscale.store.db import AlreadyExists, Record, Store

MODEL_SNAPSHOT = "ZeroscaleModel"  # in a job's stored document: its model's, as it was at CreateTransformJob

KIND = "transform-job"
IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
RUNNING = (IN_PROGRESS, STOPPING)  # a job that holds workers and counts against the concurrent quota
FINISHED = (COMPLETED, FAILED, STOPPED)  # a job that never changes again: deleted once past the retention
# How often the finished jobs past the retention are looked for: a tenth of it, within these bounds.
PRUNE_EVERY_MIN_S, PRUNE_EVERY_MAX_S = 1.0, 3600.0
log = logging.getLogger("zeroscale.transform")
_REASON_MAX = 1024
# DescribeTransformJob members echoed from the create request.
_DESCRIBED = (
    "ModelName",
    "MaxConcurrentTransforms",
    "ModelClientConfig",
    "MaxPayloadInMB",
    "BatchStrategy",
    "Environment",
    "TransformInput",
    "TransformOutput",
    "TransformResources",
    "DataProcessing",
    "ExperimentConfig",
)


def _invalid(text: str) -> ValidationException:
    return ValidationException(text)


def check(params: Mapping[str, Any]) -> None:
    """SageMaker's rules beyond botocore's model, and what zeroscale does not serve (refused by name)."""
    check_environment(params.get("Environment") or {}, "Environment")
    payload = params.get("MaxPayloadInMB", 6)
    concurrent = params.get("MaxConcurrentTransforms") or 1
    if payload > 100:
        raise _invalid(
            f"Value '{payload}' at 'maxPayloadInMB' failed to satisfy constraint: "
            "Member must have value less than or equal to 100"
        )
    if payload and concurrent * payload > 100:
        raise _invalid(
            f"MaxConcurrentTransforms ({concurrent}) x MaxPayloadInMB ({payload}) must be at most 100 MB."
        )
    inp = params["TransformInput"]
    source = inp["DataSource"]["S3DataSource"]
    if source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
        raise _invalid(
            f"S3DataType {source['S3DataType']} is not served by zeroscale (S3Prefix, ManifestFile)."
        )
    for uri, field in (
        (source["S3Uri"], "S3Uri"),
        (params["TransformOutput"]["S3OutputPath"], "S3OutputPath"),
    ):
        if not str(uri).startswith("s3://") or len(uri) <= 5:
            raise _invalid(f"{field} must be an s3:// location: {uri!r}")
        if (problem := s3_key_problem(str(uri)[5:].partition("/")[2])) is not None:
            raise _invalid(f"{field} {uri!r}: {problem}.")
    if (inp.get("SplitType") or "None") not in ("None", "Line", "RecordIO"):
        raise _invalid(f"SplitType {inp['SplitType']} is not served by zeroscale yet (None, Line, RecordIO).")
    processing = params.get("DataProcessing") or {}
    try:
        for field in ("InputFilter", "OutputFilter"):
            if processing.get(field):
                Path.parse(processing[field], field)
    except ValueError as exc:
        raise _invalid(f"DataProcessing: {exc}") from None
    lines = inp.get("SplitType") == "Line" and params["TransformOutput"].get("AssembleWith") == "Line"
    if processing.get("JoinSource", "None") == "Input" and not lines:
        raise _invalid("JoinSource Input needs SplitType Line and AssembleWith Line.")
    if params.get("DataCaptureConfig"):
        raise _invalid("DataCaptureConfig is not served by zeroscale.")


@dataclasses.dataclass
class Progress:
    """A running job's counts, kept up to date by its runner."""

    files_total: int = 0
    files_done: int = 0
    records_done: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)


class JobRunner(Protocol):
    """What runs a job's files through its model (``batch.runner.TransformRunner``)."""

    async def run(self, doc: Mapping[str, Any], progress: Progress, on_progress: Callable[[], None]) -> None:
        """Run the job that ``doc`` (its stored CreateTransformJob document) describes."""

    async def discard(self, doc: Mapping[str, Any], since: float) -> int:
        """Remove the outputs the job ``doc`` wrote (objects written since ``since``); how many."""

    async def close(self) -> None: ...


class TransformJobs:
    def __init__(
        self,
        store: Store,
        arns: Arns,
        models: Models,
        runner: JobRunner,
        clock: Callable[[], float] = time.time,
        *,
        frontend: str | None = None,  # this front end's id: the owner of the jobs it runs
        live: Callable[[], set[str]] | None = None,  # the live front ends (None: this one alone)
        retention_s: float = 0.0,  # a finished job is deleted this long after it ended (0: kept for ever)
    ) -> None:
        self.frontend = frontend
        self._live = live or (lambda: {frontend} if frontend else set())
        self._store = store
        self._arns = arns
        self._models = models
        self._runner = runner
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Progress] = {}  # jobs running now
        self._ending: set[str] = set()  # jobs being stopped here (their task is not cancelled again)
        self._retention_s = retention_s
        self._next_prune = 0.0

    def _missing(self, name: str) -> ResourceNotFound:
        return ResourceNotFound(f"Could not find requested job with name {name}")

    def _get(self, name: str) -> Record:
        rec = self._store.get(KIND, name)
        if rec is None:
            raise self._missing(name)
        return rec

    def _save(self, rec: Record, status: str | None = None, **doc: Any) -> None:
        if status is not None:
            rec.status = status
        rec.modified_at = self._clock()
        for key, value in doc.items():
            if value is None:
                rec.doc.pop(key, None)
            else:
                rec.doc[key] = value
        self._store.update(rec)

    # ---- operations ----
    def create(self, params: Mapping[str, Any], read_as: tuple[str, str] = ("", "")) -> dict[str, Any]:
        """``read_as``: the IAM user calling, (name, user id); ("", "") for the admin. The job reads the
        objects its manifest names with that user's rights."""
        name: str = params["TransformJobName"]
        check(params)
        model = self._models.get(params["ModelName"])
        # Stored as given: a setting left out may be chosen by the container (GET /execution-parameters);
        # DescribeTransformJob shows SageMaker's defaults for them. With it, the model as it is now.
        doc = copy.deepcopy(dict(params))
        doc[MODEL_SNAPSHOT] = copy.deepcopy(model.doc)
        if read_as[0]:
            doc[READ_AS] = list(read_as)
        arn = self._arns.arn(KIND, name)
        now = self._clock()
        try:
            self._store.insert(Record(KIND, name, arn, now, now, IN_PROGRESS, doc, self.frontend))
        except AlreadyExists:
            raise ResourceInUse(
                f"Job name must be unique within an AWS account and region, and a job with this name "
                f"already exists ({arn})."
            ) from None
        self._start(name)
        return {"TransformJobArn": arn}

    def describe(self, name: str) -> dict[str, Any]:
        rec = self._get(name)
        out: dict[str, Any] = {
            "TransformJobName": rec.name,
            "TransformJobArn": rec.arn,
            "TransformJobStatus": rec.status,
            "CreationTime": rec.created_at,
        }
        out.update({k: rec.doc[k] for k in _DESCRIBED if rec.doc.get(k) is not None})
        out.setdefault("MaxConcurrentTransforms", 1)
        out.setdefault("MaxPayloadInMB", 6)
        for key in ("FailureReason", "TransformStartTime", "TransformEndTime"):
            if rec.doc.get(key) is not None:
                out[key] = rec.doc[key]
        return out

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        records, token = paginate_stored(
            self._store, KIND, params, sort_keys=("Name", "CreationTime", "Status")
        )
        summaries = []
        for r in records:
            summary = {
                "TransformJobName": r.name,
                "TransformJobArn": r.arn,
                "CreationTime": r.created_at,
                "LastModifiedTime": r.modified_at,
                "TransformJobStatus": r.status,
            }
            for key in ("TransformEndTime", "FailureReason"):
                if r.doc.get(key) is not None:
                    summary[key] = r.doc[key]
            summaries.append(summary)
        out: dict[str, Any] = {"TransformJobSummaries": summaries}
        if token is not None:
            out["NextToken"] = token
        return out

    def stop(self, name: str) -> None:
        rec = self._get(name)
        if rec.status != IN_PROGRESS:
            if rec.status in (STOPPING, STOPPED):
                return
            raise ValidationException(f"Transform job {name} is {rec.status}; only an InProgress job stops.")
        self._save(rec, STOPPING)
        task = self._tasks.get(name.lower())
        if task is not None:
            self._ending.add(name.lower())
            task.cancel()  # its end writes Stopped
        elif rec.owner is None or rec.owner == self.frontend or rec.owner not in self._live():
            claimed = self._store.claim(KIND, rec.name, self.frontend or "", rec.owner)
            if claimed is not None:
                self._begin(claimed.name, self._stopped(claimed))
        # else: the live front end that runs it cancels it at its next sync

    def sync(self, live: set[str]) -> None:
        """What other front ends wrote: cancel the jobs of this one stopped through another, and take over
        (claim, then resume or end Stopped) the unfinished jobs of front ends not in ``live``."""
        for rec in self._store.list(KIND, (IN_PROGRESS, STOPPING)):
            task = self._tasks.get(rec.name.lower())
            if task is not None:
                if rec.status == STOPPING and rec.name.lower() not in self._ending:
                    self._ending.add(rec.name.lower())
                    task.cancel()  # stopped through another front end: its end writes Stopped
                continue
            if rec.owner in live:
                continue  # a live front end runs it
            claimed = self._store.claim(KIND, rec.name, self.frontend or "", rec.owner)
            if claimed is None:
                continue  # another front end took it
            if rec.owner != self.frontend:
                log.warning("transform job %s: taking over from front end %s", rec.name, rec.owner)
            if claimed.status == IN_PROGRESS:
                self._start(claimed.name)
            elif claimed.status == STOPPING:
                self._begin(claimed.name, self._stopped(claimed))

    async def _stopped(self, rec: Record) -> None:
        """End a Stopping job Stopped, after removing what it wrote."""
        self._ending.add(rec.name.lower())
        try:
            removed = await self._runner.discard(rec.doc, since=rec.created_at)
            if removed:
                log.info("transform job %s stopped: %d output(s) removed", rec.name, removed)
        except Exception:
            log.exception("transform job %s: its outputs could not be removed", rec.name)
        current = self._store.get(KIND, rec.name) or rec
        counts = self._keep_progress(rec.name)
        extra = {"ZeroscaleProgress": counts} if counts is not None else {}
        self._save(current, STOPPED, TransformEndTime=self._clock(), **extra)
        self._ending.discard(rec.name.lower())

    # ---- the job ----
    def _start(self, name: str) -> None:
        self._begin(name, self._run(name))

    def _begin(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks[name.lower()] = task
        task.add_done_callback(lambda t: self._tasks.pop(name.lower(), None))

    async def _run(self, name: str) -> None:
        rec = self._get(name)
        self._save(rec, TransformStartTime=rec.doc.get("TransformStartTime") or self._clock())
        progress = self._progress[name.lower()] = Progress()
        try:
            await self._runner.run(rec.doc, progress, lambda: None)
        except asyncio.CancelledError:
            current = self._store.get(KIND, name)
            if current is not None and current.status == STOPPING:
                await self._stopped(current)
            else:
                self._keep_progress(name)
            raise
        except (DeployError, ValidationException) as exc:
            self._finish(name, FAILED, str(getattr(exc, "message", None) or exc))
            return
        except Exception as exc:
            log.exception("transform job %s failed", name)
            self._finish(name, FAILED, f"InternalFailure: {type(exc).__name__}: {exc}")
            return
        current = self._store.get(KIND, name)
        if current is not None and current.status == STOPPING:  # through another front end, before its sync
            await self._stopped(current)
            return
        if progress.failures:
            shown = "; ".join(progress.failures[:3])
            more = f" (and {len(progress.failures) - 3} more)" if len(progress.failures) > 3 else ""
            self._finish(name, FAILED, f"{len(progress.failures)} file(s) failed: {shown}{more}")
        else:
            self._finish(name, COMPLETED, None)

    def _keep_progress(self, name: str) -> dict[str, Any] | None:
        progress = self._progress.pop(name.lower(), None)
        if progress is None:
            return None
        return {
            "FilesTotal": progress.files_total,
            "FilesDone": progress.files_done,
            "FilesFailed": len(progress.failures),
            "RecordsDone": progress.records_done,
        }

    def progress(self, name: str) -> dict[str, Any]:
        """zeroscale's view of a job: its status and how far it got (files and records)."""
        rec = self._get(name)
        running = self._progress.get(name.lower())
        counts = (
            {
                "FilesTotal": running.files_total,
                "FilesDone": running.files_done,
                "FilesFailed": len(running.failures),
                "RecordsDone": running.records_done,
            }
            if running is not None
            else rec.doc.get("ZeroscaleProgress") or {}
        )
        out = {"TransformJobName": rec.name, "TransformJobStatus": rec.status, **counts}
        if rec.doc.get("FailureReason"):
            out["FailureReason"] = rec.doc["FailureReason"]
        return out

    def _finish(self, name: str, status: str, reason: str | None) -> None:
        counts = self._keep_progress(name)
        rec = self._store.get(KIND, name)
        if rec is None:
            return
        if counts is not None:
            rec.doc["ZeroscaleProgress"] = counts
        if reason is not None and len(reason) > _REASON_MAX:
            reason = reason[: _REASON_MAX - 3] + "..."
        # Its model's copy goes: only a job that runs (again, after a restart) reads it, and a finished job's
        # record is kept for --transform-retention-days (a 15-container model's copy made each 0.5 MB)
        self._save(
            rec, status, FailureReason=reason, TransformEndTime=self._clock(), **{MODEL_SNAPSHOT: None}
        )

    # ---- retention ----
    @property
    def prune_every_s(self) -> float:
        """How often the finished jobs past the retention are looked for."""
        return min(PRUNE_EVERY_MAX_S, max(PRUNE_EVERY_MIN_S, self._retention_s / 10))

    def prune(self) -> int:
        """Delete the finished jobs that ended longer than the retention ago (none with a retention of 0; at
        most once every ``prune_every_s``); how many. Every front end on a database prunes: the deletes are
        idempotent, and a job still running (or stopping) is never one of them."""
        if self._retention_s <= 0:
            return 0
        now = self._clock()
        if now < self._next_prune:
            return 0
        self._next_prune = now + self.prune_every_s
        gone = self._store.prune(KIND, FINISHED, now - self._retention_s)
        if gone:
            log.info(
                "deleted %d transform job(s) that ended more than %g days ago",
                gone,
                self._retention_s / 86400,
            )
        return gone

    async def keep_pruned(self) -> None:
        """``prune`` now and then every ``prune_every_s``, for as long as the server runs."""
        if self._retention_s <= 0:
            return
        while True:
            try:
                await asyncio.to_thread(self.prune)
            except Exception:  # the next pass tries again; this loop must not end
                log.exception("transform jobs: deleting those past their retention failed")
            await asyncio.sleep(self.prune_every_s)

    async def resume(self, live: set[str] | None = None) -> None:
        """After a restart: this front end's InProgress jobs, and those of front ends not in ``live``, go on
        (finished files are kept); Stopping ones end Stopped."""
        self.sync(live if live is not None else set())

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._runner.close()
