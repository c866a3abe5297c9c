"""One batch transform job's work: start the model's workers for the job, read every input object from S3 in
a stream, cut it into records and mini-batches, send each to a worker, and upload each file's results as
``<S3OutputPath>/<input path relative to the prefix>.out`` (records in input order; an object appears only
when its file is done). The workers go when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import itertools
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from zeroscale.artifacts.fetch import s3_key_problem
from zeroscale.asyncinf.s3io import CHUNK, OutputError, S3Io, S3Url
from zeroscale.background import Background
from zeroscale.control.deploy import Deployer
from zeroscale.control.models import creator
from zeroscale.control.transform_jobs import MODEL_SNAPSHOT, Progress
from zeroscale.dataproc import DataProcessing, ProcessingError
from zeroscale.errors import DeployError, HostMemoryFull, ModelError, Throttling, ZeroscaleError
from zeroscale.router.fleet import Fleet
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.router.spec import PoolSpec
from zeroscale.store.db import Record
from zeroscale.types import TRANSFORM_ROUTE_PREFIX
from zeroscale.workers.client import Body, FilePayload

log = logging.getLogger("zeroscale.batch")
MB = 1024 * 1024
# One job's inputs are listed whole before it starts (its resume and its Stop need the list): at most this
# many files, from a manifest of at most this many bytes; past either the job fails saying so (a 4-million
# entry manifest held 1.67 GB). Split a larger input over several jobs.
MAX_INPUT_FILES = 100_000
MAX_MANIFEST_BYTES = 64 * MB


@dataclass(frozen=True)
class JobSpec:
    """A transform job in plain values (read from its stored document by control/transform_jobs.py)."""

    name: str
    model_name: str
    instance_type: str
    instance_count: int
    max_concurrent: int
    max_payload_mb: int  # 0: no limit
    strategy: str  # SingleRecord | MultiRecord
    timeout_s: float
    max_retries: int
    environment: dict[str, str]
    data_type: str  # S3Prefix | ManifestFile
    input_uri: str
    content_type: str | None
    gzip: bool
    split: str  # None | Line | RecordIO
    output_path: str
    accept: str | None
    assemble_lines: bool
    processing: DataProcessing | None = None
    # Of MaxConcurrentTransforms, BatchStrategy and MaxPayloadInMB, those the job left out: the container's
    # optional GET /execution-parameters may choose them.
    unset: frozenset[str] = frozenset()
    # The model as it was when the job was created (its document): a job resumed after a restart runs it
    # even if the model was deleted or replaced since, as SageMaker's does.
    model_doc: dict[str, Any] | None = None
    # The IAM user who created the job, (name, user id) (("", ""): the admin): the objects a manifest names
    # are read with that user's rights.
    read_as: tuple[str, str] = ("", "")

    @property
    def route(self) -> str:
        """The router key of the job's workers (no endpoint name contains a colon)."""
        return TRANSFORM_ROUTE_PREFIX + self.name


@dataclass(frozen=True)
class InputFile:
    url: str
    relative: str  # the output name is <S3OutputPath>/<relative>.out


class FileFailed(Exception):
    """This input file gets no output; the job goes on with the others."""


RECORDIO_MAGIC = 0xCED7230A
_LENGTH_MASK = (1 << 29) - 1


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _recordio(stream: IO[bytes]) -> Iterator[bytes]:
    """MXNet RecordIO records, each with its headers and padding (a record split in parts, cflag 1-3, stays
    one record)."""
    record = b""
    while True:
        head = _read_exactly(stream, 8)
        if not head:
            if record:
                raise FileFailed("the RecordIO file ends inside a multi-part record")
            return
        if len(head) < 8 or int.from_bytes(head[:4], "little") != RECORDIO_MAGIC:
            raise FileFailed("not a RecordIO file (bad magic number or truncated header)")
        lrec = int.from_bytes(head[4:], "little")
        length, cflag = lrec & _LENGTH_MASK, lrec >> 29
        data = _read_exactly(stream, length + (-length % 4))
        if len(data) < length:
            raise FileFailed("the RecordIO file ends inside a record")
        record += head + data
        if cflag in (0, 3):  # a whole record, or the last part of one
            yield record
            record = b""


def _records(stream: IO[bytes], split: str) -> Iterator[bytes]:
    """Records of an object read in 1 MB chunks: its lines (each with its newline), its RecordIO records, or
    the whole object (SplitType None with DataProcessing; without, ``_spool`` streams it instead)."""
    if split == "RecordIO":
        yield from _recordio(stream)
        return
    if split != "Line":
        yield stream.read()
        return
    rest = b""
    while chunk := stream.read(CHUNK):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line.strip():
                yield line + b"\n"
    if rest.strip():
        yield rest if rest.endswith(b"\n") else rest + b"\n"


def _batches(records: Iterator[bytes], multi: bool, limit_bytes: int) -> Iterator[list[bytes]]:
    """Mini-batches of whole records, each at most ``limit_bytes`` in all (0: no limit)."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if limit_bytes and len(record) > limit_bytes:
            raise FileFailed(
                f"a record of {len(record)} bytes is larger than MaxPayloadInMB ({limit_bytes // MB} MB)"
            )
        if batch and (not multi or (limit_bytes and size + len(record) > limit_bytes)):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield batch


class _TooMany(Exception):
    """An input listing past MAX_INPUT_FILES or MAX_MANIFEST_BYTES."""


class _Refused(Exception):
    """An object a manifest names that the job's creator may not read."""


# (bucket, key) -> None, or why the job may not read the object
ObjectReads = Callable[[str, str], str | None]


def _line_batches(stream: IO[bytes], limit_bytes: int) -> Iterator[list[bytes]]:
    """MultiRecord mini-batches of lines cut straight from the stream at the last newline within
    ``limit_bytes`` (0: no limit), with no per-line work: each batch is one piece of bytes."""
    buf = b""
    eof = False
    while True:
        while not eof and (not limit_bytes or len(buf) < limit_bytes):
            chunk = stream.read(CHUNK)
            if not chunk:
                eof = True
            buf += chunk
        if not buf:
            return
        if eof and (not limit_bytes or len(buf) <= limit_bytes):
            cut = len(buf)
        else:
            cut = buf.rfind(b"\n", 0, limit_bytes) + 1
            if cut == 0:
                raise FileFailed(f"a record is larger than MaxPayloadInMB ({limit_bytes // MB} MB)")
        batch, buf = buf[:cut], buf[cut:]
        if batch.strip():
            yield [batch if batch.endswith(b"\n") else batch + b"\n"]


def _spool(stream: IO[bytes], into: IO[bytes], limit_bytes: int) -> int:
    """Copy a whole object (SplitType None: one request) into a scratch file in 1 MB chunks; its size.
    FileFailed past ``limit_bytes`` (0: no limit, SageMaker's setting for arbitrarily large payloads)."""
    size = 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        if limit_bytes and size > limit_bytes:
            raise FileFailed(f"the object is larger than MaxPayloadInMB ({limit_bytes // MB} MB)")
        into.write(chunk)
    into.flush()
    return size


_STRATEGIES = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}
_STRATEGIES.update({v: v for v in _STRATEGIES.values()})
EXECUTION_PARAMETERS = ("MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB")
_MEMORY_RETRY_S = 1.0  # a job whose workers do not fit the host's memory now tries again this often
_UPLOAD_WAIT_S = 600.0  # at most, for an upload of a stopped job still under way to end
_CUT_PARAMETERS = frozenset({"BatchStrategy", "MaxPayloadInMB"})  # those that say how an input is cut


def container_parameters(job: JobSpec, answer: Any) -> JobSpec:
    """The job with what the container's GET /execution-parameters answer chose for the settings the job
    left out (SageMaker's precedence: the job's own values win). ValueError names what is wrong in it."""
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    changes: dict[str, Any] = {}
    for name in job.unset & answer.keys():
        value = answer[name]
        if name == "BatchStrategy":
            if value not in _STRATEGIES:
                raise ValueError(f"BatchStrategy {value!r} is not MULTI_RECORD or SINGLE_RECORD")
            changes["strategy"] = _STRATEGIES[value]
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} {value!r} is not an integer")
        if name == "MaxConcurrentTransforms":
            if not 1 <= value <= 100:
                raise ValueError(f"MaxConcurrentTransforms {value} is not between 1 and 100")
            changes["max_concurrent"] = value
        else:
            if not 0 <= value <= 100:
                raise ValueError(f"MaxPayloadInMB {value} is not between 0 and 100")
            changes["max_payload_mb"] = value
    chosen = dataclasses.replace(job, **changes, unset=frozenset())
    if chosen.max_concurrent * chosen.max_payload_mb > 100:
        raise ValueError(
            f"MaxConcurrentTransforms ({chosen.max_concurrent}) x MaxPayloadInMB ({chosen.max_payload_mb}) "
            "is over 100"
        )
    return chosen


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _count(batch: list[bytes], whole_lines: bool) -> int:
    if not whole_lines:
        return len(batch)
    return sum(1 for line in batch[0].split(b"\n") if line.strip())


def _workers(job: JobSpec) -> int:
    """MaxConcurrentTransforms workers per instance."""
    return max(1, job.max_concurrent * job.instance_count)


def _next_counted(batches: Iterator[list[bytes]], whole_lines: bool) -> tuple[list[bytes], int] | None:
    """The next mini-batch and its number of records (None after the last): in the thread that reads."""
    batch = next(batches, None)
    return None if batch is None else (batch, _count(batch, whole_lines))


class TransformRunner:
    def __init__(
        self,
        fleet: Fleet,
        deployer: Deployer,
        s3: S3Io,
        scratch_dir: Path,
        object_reads: Callable[[tuple[str, str]], ObjectReads | None] | None = None,
    ) -> None:
        """``object_reads``: what a job made by an IAM user (``JobSpec.read_as``) may read in S3 (None:
        anything)."""
        self._fleet = fleet
        self._object_reads = object_reads
        self._deployer = deployer
        self._s3 = s3
        self._scratch_dir = scratch_dir
        self._background = Background("transform workers")
        # Per job, the uploads under way in threads: a cancelled job's go on until they end, and what a
        # stopped job wrote is removed only once none is left (``discard``).
        self._uploads: dict[str, set[threading.Event]] = {}

    async def run(self, doc: Mapping[str, Any], progress: Progress, on_progress: Callable[[], None]) -> None:
        """Run the job ``doc`` (its stored CreateTransformJob document) describes. Raises DeployError when the
        workers cannot start or the input cannot be listed; a file that fails is added to
        ``progress.failures`` and the others go on."""
        job = job_spec(doc)
        files = await asyncio.to_thread(self._inputs, job)
        todo = [f for f in files if not await asyncio.to_thread(self._exists, self._output_url(job, f))]
        progress.files_total = len(files)
        progress.files_done = len(files) - len(todo)  # a resumed job keeps what it finished
        on_progress()
        if not todo:
            return
        workers = asyncio.ensure_future(self._ready(job))
        try:
            # The inputs are opened and read while the workers start, unless the container may still choose
            # how they are cut (a job that left BatchStrategy or MaxPayloadInMB out).
            cut = job if not job.unset & _CUT_PARAMETERS else await workers
            # One file more than there are workers is read at once: the next file's read (and the last
            # one's upload) overlaps the workers' work, and the pool queues what no worker can take yet.
            files_at_once = asyncio.Semaphore(_workers(cut) + 1)

            def widen(ready: asyncio.Future[JobSpec]) -> None:  # the container chose more workers
                if not ready.cancelled() and ready.exception() is None:
                    for _ in range(_workers(ready.result()) - _workers(cut)):
                        files_at_once.release()

            workers.add_done_callback(widen)

            async def one(item: InputFile) -> None:
                async with files_at_once:
                    try:
                        records = await self._transform(cut, workers, item)  # not `+= await`: files overlap
                        progress.records_done += records
                        progress.files_done += 1
                    except FileFailed as exc:
                        progress.failures.append(f"{item.url}: {exc}")
                    on_progress()

            await asyncio.gather(*(one(f) for f in todo))
            await workers  # DeployError if they never started (each file stopped on it too)
        finally:  # the job is done: its workers go in the background
            if not self._uploads.get(job.name.lower()):
                self._uploads.pop(job.name.lower(), None)
            workers.cancel()
            workers.add_done_callback(_ignore)
            self._background.spawn(self._fleet.deactivate(job.route, timeout_s=2.0))

    async def discard(self, doc: Mapping[str, Any], since: float) -> int:
        """Remove the ``.out`` objects the job ``doc`` wrote (those of its input files, written since
        ``since`` on this clock, less S3's one-second rounding), once its uploads under way ended; how many
        were removed."""
        job = job_spec(doc)
        pending = list(self._uploads.pop(job.name.lower(), ()))
        if pending:
            await asyncio.to_thread(lambda: [done.wait(_UPLOAD_WAIT_S) for done in pending])  # bounded
        return await asyncio.to_thread(self._discard, job, since - 2.0)

    def _discard(self, job: JobSpec, since: float) -> int:
        try:
            files = self._inputs(job)
        except DeployError:
            return 0  # the inputs are gone: so are the names of its outputs
        root = S3Url.parse(job.output_path)
        wanted = {S3Url.parse(self._output_url(job, f)).key for f in files}
        prefix = root.key.rstrip("/") + "/" if root.key.strip("/") else ""
        removed = 0
        client = self._s3.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=root.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"] in wanted and obj["LastModified"].timestamp() >= since:
                    client.delete_object(Bucket=root.bucket, Key=obj["Key"])
                    removed += 1
        return removed

    async def _upload(self, job: JobSpec, item: InputFile, sink: BinaryIO, content_type: str) -> None:
        done = threading.Event()
        pending = self._uploads.setdefault(job.name.lower(), set())
        pending.add(done)

        def upload() -> None:
            try:
                self._s3.upload(self._output_url(job, item), sink, content_type)
            finally:
                done.set()

        try:
            await asyncio.to_thread(upload)
        finally:
            if done.is_set():  # else still under way (the job was cancelled): ``discard`` waits for it
                pending.discard(done)

    async def _ready(self, job: JobSpec) -> JobSpec:
        """The job's workers started, and the job as they run it (``_execution_parameters``)."""
        await self._start_workers(job)
        return await self._execution_parameters(job)

    async def close(self) -> None:
        """Wait for the workers of finished jobs to be gone."""
        await self._background.join()

    async def _start_workers(self, job: JobSpec) -> None:
        workers = _workers(job)
        variant = {  # named after the job: its log streams are <job name>/<worker id>, as SageMaker's
            "VariantName": job.name,
            "ModelName": job.model_name,
            "InstanceType": job.instance_type,
            "InitialInstanceCount": job.instance_count,
        }
        config = Record("transform-job", job.name, "", 0.0, 0.0, None, {"ProductionVariants": [variant]})
        models = None
        if job.model_doc is not None:
            models = {
                job.model_name.lower(): Record("model", job.model_name, "", 0.0, 0.0, None, job.model_doc)
            }
        with self._deployer.hold() as hold:  # its artifacts stay in the cache until its pools are routed
            specs = await self._deployer.pool_specs(job.route, config, models, hold=hold)
            for attempt in itertools.count():
                try:
                    await self._fleet.activate(job.route, self._job_specs(job, specs, workers), warm=True)
                    return
                except HostMemoryFull as exc:
                    # Busy or provisioned workers (another job's, say) hold the memory: the job waits its
                    # turn, InProgress, rather than failing; StopTransformJob ends the wait.
                    if not attempt:
                        log.info("transform job %s waits for memory for its workers: %s", job.name, exc)
                    await asyncio.sleep(_MEMORY_RETRY_S)

    @staticmethod
    def _job_specs(job: JobSpec, specs: list[PoolSpec], workers: int) -> list[PoolSpec]:
        batch_env = {
            "SAGEMAKER_BATCH": "true",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(job.max_payload_mb),
            "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD" if job.strategy == "MultiRecord" else "SINGLE_RECORD",
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": str(job.max_concurrent),
        }
        # MaxConcurrentTransforms workers per instance, each with an instance's per-vCPU share of memory
        return [
            dataclasses.replace(
                s,
                env={**s.env, **job.environment, **batch_env},
                containers=tuple(  # a model with several containers: each gets them
                    dataclasses.replace(c, env={**c.env, **job.environment, **batch_env})
                    for c in s.containers
                ),
                max_concurrency=workers,
                provisioned=workers,
            )
            for s in specs
        ]

    async def _execution_parameters(self, job: JobSpec) -> JobSpec:
        """Ask a worker the container contract's optional GET /execution-parameters when the job left any
        of its settings out; a container that does not answer 200 with valid JSON changes nothing. A new
        MaxConcurrentTransforms restarts the job's workers with that many per instance."""
        route = self._fleet.route(job.route)
        if not job.unset or route is None:
            return job
        variant = route.choose()
        if not isinstance(variant, VariantPool):  # a model of several containers: no one container to ask
            return job
        ask = Invocation(b"", [], timeout_s=10.0, method=b"GET", path=b"/execution-parameters")
        try:
            resp = await variant.invoke(ask)
        except ZeroscaleError:  # 404 and the like: the container does not implement it
            return job
        try:
            chosen = container_parameters(job, json.loads(resp.body))
        except ValueError as exc:  # json.JSONDecodeError is one
            log.warning("transform job %s: GET /execution-parameters ignored: %s", job.name, exc)
            return job
        log.info(
            "transform job %s: the container chose MaxConcurrentTransforms %d, BatchStrategy %s, "
            "MaxPayloadInMB %d",
            job.name,
            chosen.max_concurrent,
            chosen.strategy,
            chosen.max_payload_mb,
        )
        if chosen.max_concurrent != job.max_concurrent:
            await self._start_workers(chosen)
        return chosen

    # ---- S3 ----
    def _inputs(self, job: JobSpec) -> list[InputFile]:
        client = self._s3.client()
        try:
            loc = S3Url.parse(job.input_uri)
            if job.data_type == "ManifestFile":
                raw = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read(MAX_MANIFEST_BYTES + 1)
                if len(raw) > MAX_MANIFEST_BYTES:
                    raise _TooMany(f"the manifest is larger than {MAX_MANIFEST_BYTES // MB} MB")
                entries = json.loads(raw)
                if len(entries) - 1 > MAX_INPUT_FILES:
                    raise _TooMany(f"the manifest names {len(entries) - 1} files")
                prefix = str(entries[0]["prefix"])
                base = S3Url.parse(prefix)
                named = [(f"{base.key}{rel}", str(rel)) for rel in entries[1:]]
                self._check_reads(job, base.bucket, (key for key, _ in named))
                return [InputFile(f"s3://{base.bucket}/{key}", rel) for key, rel in named]
            directory = loc.key[: loc.key.rfind("/") + 1]
            files: list[InputFile] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if not key.endswith("/"):
                        files.append(InputFile(f"s3://{loc.bucket}/{key}", key[len(directory) :]))
                if len(files) > MAX_INPUT_FILES:
                    raise _TooMany(f"more than {MAX_INPUT_FILES} objects are under it")
        except _Refused as exc:
            raise DeployError(f"ClientError: the manifest {job.input_uri} names {exc}") from None
        except _TooMany as exc:
            raise DeployError(
                f"ClientError: the input {job.input_uri} is too large for one transform job: {exc} (at "
                f"most {MAX_INPUT_FILES} files, and a manifest of at most {MAX_MANIFEST_BYTES // MB} MB). "
                "Split it over several jobs."
            ) from None
        except Exception as exc:
            raise DeployError(f"Could not list the input {job.input_uri}: {exc}") from exc
        if not files:  # as SageMaker: nothing to transform fails the job, not Completed with no output
            raise DeployError(f"ClientError: No S3 objects found under S3 URL {job.input_uri!r}.")
        return files

    def _check_reads(self, job: JobSpec, bucket: str, keys: Iterable[str]) -> None:
        """_Refused naming the first object the job's creator may not read (``object_reads``), or whose key
        the store may read as another's (``s3_key_problem``: IAM checks the key as written)."""
        may = self._object_reads(job.read_as) if self._object_reads is not None else None
        for key in keys:
            if (problem := s3_key_problem(key)) is not None:
                raise _Refused(f"s3://{bucket}/{key}: {problem}")
            why = may(bucket, key) if may is not None else None
            if why is not None:
                raise _Refused(f"s3://{bucket}/{key}, which it may not read: {why}")

    def _output_url(self, job: JobSpec, item: InputFile) -> str:
        return f"{job.output_path.rstrip('/')}/{item.relative}.out"

    def _exists(self, url: str) -> bool:
        loc = S3Url.parse(url)
        try:
            self._s3.client().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception:
            return False
        return True

    # ---- one file ----
    async def _transform(self, job: JobSpec, workers: asyncio.Future[JobSpec], item: InputFile) -> int:
        """Transform one file into its .out object; the number of records. ``job`` says how the file is cut;
        ``workers`` is awaited before the first invocation and gives the job as the workers run it."""
        loc = S3Url.parse(item.url)
        try:
            resp = await asyncio.to_thread(self._s3.client().get_object, Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise FileFailed(f"could not read it: {exc}") from exc
        body = resp["Body"]
        stream: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=body)) if job.gzip else body
        if job.split == "None" and job.processing is None:
            try:
                return await self._transform_whole(job, workers, item, stream)
            finally:
                with contextlib.suppress(Exception):
                    body.close()
        multi = job.strategy == "MultiRecord"
        # Lines in MultiRecord batches with no per-record processing: cut in bulk, not line by line.
        bulk = multi and job.split == "Line" and job.processing is None
        batches = (
            _line_batches(stream, job.max_payload_mb * MB)
            if bulk
            else _batches(_records(stream, job.split), multi, job.max_payload_mb * MB)
        )
        self._scratch_dir.mkdir(parents=True, exist_ok=True)
        records = 0
        content_type = job.accept or "application/octet-stream"
        ahead: asyncio.Future[tuple[list[bytes], int] | None] | None = None
        try:
            with tempfile.TemporaryFile(dir=self._scratch_dir) as sink:
                # The next batch is read, cut and counted (in a thread) while the worker answers this one.
                ahead = asyncio.ensure_future(asyncio.to_thread(_next_counted, batches, bulk))
                while True:
                    try:
                        counted = await ahead
                    except (OSError, EOFError, gzip.BadGzipFile) as exc:
                        raise FileFailed(f"could not read it: {exc}") from exc
                    if counted is None:
                        break
                    nxt, count = counted
                    ahead = asyncio.ensure_future(asyncio.to_thread(_next_counted, batches, bulk))
                    proc = job.processing
                    try:
                        payload = b"".join(proc.filter_input(r) for r in nxt) if proc else b"".join(nxt)
                        out, answered_type = await self._invoke(await workers, payload)
                        if proc is not None:
                            out = proc.finish(nxt, out)
                    except (ProcessingError, UnicodeDecodeError) as exc:
                        raise FileFailed(f"DataProcessing: {exc}") from exc
                    content_type = job.accept or answered_type or content_type
                    sink.write(out)
                    if job.assemble_lines and not out.endswith(b"\n"):
                        sink.write(b"\n")
                    records += count
                sink.flush()
                sink.seek(0)
                try:
                    await self._upload(job, item, sink, content_type)
                except OutputError as exc:
                    raise FileFailed(str(exc)) from exc
        finally:
            if ahead is not None:  # a batch read ahead and never used: its outcome is of no interest
                ahead.add_done_callback(_ignore)
            with contextlib.suppress(Exception):
                body.close()
        return records

    async def _transform_whole(
        self, job: JobSpec, workers: asyncio.Future[JobSpec], item: InputFile, stream: IO[bytes]
    ) -> int:
        """SplitType None: the object is one request, streamed S3 -> scratch file -> worker -> scratch file
        -> S3, so the server never holds it (however large, with MaxPayloadInMB 0); one record."""
        self._scratch_dir.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryFile(dir=self._scratch_dir) as source,
            tempfile.TemporaryFile(dir=self._scratch_dir) as sink,
        ):
            try:
                size = await asyncio.to_thread(_spool, stream, source, job.max_payload_mb * MB)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise FileFailed(f"could not read it: {exc}") from exc
            payload = FilePayload(source, size, sink)
            _, answered_type = await self._invoke(await workers, payload)
            if job.assemble_lines and payload.written:
                sink.seek(-1, 2)
                if sink.read(1) != b"\n":
                    sink.write(b"\n")
            sink.flush()
            sink.seek(0)
            content_type = job.accept or answered_type or "application/octet-stream"
            try:
                await self._upload(job, item, sink, content_type)
            except OutputError as exc:
                raise FileFailed(str(exc)) from exc
        return 1

    async def _invoke(self, job: JobSpec, payload: Body) -> tuple[bytes, str | None]:
        """The answer (for a FilePayload: in its sink, and b"" here) and its content type; each retry
        sends the payload again from its start."""
        headers: list[tuple[bytes, bytes]] = []
        if job.content_type:
            headers.append((b"Content-Type", job.content_type.encode()))
        if job.accept:
            headers.append((b"Accept", job.accept.encode()))
        attempt = 0
        while True:
            route = self._fleet.route(job.route)
            if route is None:
                raise FileFailed("the job's workers are gone")
            if isinstance(payload, FilePayload):  # a retry: from the start again
                payload.source.seek(0)
                payload.sink.seek(0)
                payload.sink.truncate()
                payload.written = 0
            try:
                resp = await route.choose().invoke(Invocation(payload, headers, timeout_s=job.timeout_s))
            except Throttling:
                await asyncio.sleep(0.1)
                continue
            except ModelError as err:
                attempt += 1
                if attempt > job.max_retries:
                    raise FileFailed(f"the model failed: {err.message}") from err
                continue
            except ZeroscaleError as err:
                raise FileFailed(f"{err.code}: {err.message}") from err
            answered = resp.header(b"content-type")
            return resp.body, answered.decode("latin-1") if answered else None


def job_spec(doc: Mapping[str, Any]) -> JobSpec:
    """The runner's view of a stored CreateTransformJob document (already checked)."""
    inp = doc["TransformInput"]
    out = doc["TransformOutput"]
    res = doc["TransformResources"]
    client = doc.get("ModelClientConfig") or {}
    source = inp["DataSource"]["S3DataSource"]
    return JobSpec(
        name=doc["TransformJobName"],
        model_name=doc["ModelName"],
        instance_type=res["InstanceType"],
        instance_count=int(res["InstanceCount"]),
        max_concurrent=int(doc.get("MaxConcurrentTransforms") or 1),
        max_payload_mb=int(doc.get("MaxPayloadInMB", 6)),
        strategy=doc.get("BatchStrategy") or "SingleRecord",
        timeout_s=float(client.get("InvocationsTimeoutInSeconds") or 600),
        max_retries=int(client.get("InvocationsMaxRetries", 3)),
        environment={str(k): str(v) for k, v in (doc.get("Environment") or {}).items()},
        data_type=source["S3DataType"],
        input_uri=source["S3Uri"],
        content_type=inp.get("ContentType"),
        gzip=inp.get("CompressionType") == "Gzip",
        split=inp.get("SplitType") or "None",
        output_path=out["S3OutputPath"],
        accept=out.get("Accept"),
        assemble_lines=out.get("AssembleWith") == "Line",
        processing=DataProcessing.of(doc.get("DataProcessing"), inp.get("ContentType"), out.get("Accept")),
        unset=frozenset(name for name in EXECUTION_PARAMETERS if doc.get(name) is None),
        model_doc=dict(doc[MODEL_SNAPSHOT]) if doc.get(MODEL_SNAPSHOT) else None,
        read_as=creator(doc),
    )
