"""Per-endpoint logs, CloudWatch Logs style: a leaf fed by ``zeroscale.events`` and the workers' output.

- ``store``: the on-disk layout of groups (``/aws/sagemaker/Endpoints/<name>``) and streams
  (``<variant>/<worker-id>``, ``<variant>/platform``); the zygote writes worker output there
  (``workers.capture``);
- ``reader``: events out of stream files, paged by byte offset and searched by time;
- ``patterns``: CloudWatch filter patterns;
- ``sink``: platform events (cold starts, scale-in, crashes, deploys) as lines in the streams;
- ``retention``: deletes streams older than ``--log-retention-hours``, and the oldest past ``--log-max-mb``;
- ``sources``: what this front end's store answers, here or to another front end (``zeroscale.peers``);
- ``cloudwatch``: DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents, merged over every
  live front end's store.

``Logs`` wires them for the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from zeroscale.logs.cloudwatch import AsyncOperation, CloudWatchLogs
from zeroscale.logs.retention import Retention
from zeroscale.logs.sink import LogSink
from zeroscale.logs.store import LogStore
from zeroscale.peers import PeerClient

__all__ = ["CloudWatchLogs", "LogSink", "LogStore", "Logs", "Retention"]


class Logs:
    def __init__(
        self,
        root: Path,
        *,
        region: str,
        account_id: str,
        retention_hours: float,
        max_bytes: int = 0,
        stream_bytes_per_minute: int = 0,
        ident: str = "local",
        peers: PeerClient | None = None,
    ) -> None:
        self.store = LogStore(root)
        self.sink = LogSink(self.store)
        self.retention = Retention(
            self.store,
            retention_hours * 3600,
            live=self.sink.live_streams,
            max_bytes=max_bytes,
            stream_bytes_per_minute=stream_bytes_per_minute,
        )
        cloudwatch = CloudWatchLogs(
            self.store,
            region,
            account_id,
            retention_hours,
            ident=ident,
            others=peers.gather if peers else None,
        )
        self.operations: dict[str, AsyncOperation] = cloudwatch.operations()
        self.peer_ops = cloudwatch.local.ops  # what another front end may ask of this one's store
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.retention.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
