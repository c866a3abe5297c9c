"""Metric alarms and their history in the server's database (SQLite or PostgreSQL, through
``store/migrations.upgrade``): ``cloudwatch_alarms`` (one row per alarm: its configuration as PutMetricAlarm
gave it, its state and why) and ``cloudwatch_alarm_history`` (every configuration change, state change and
action, as DescribeAlarmHistory answers them). Every front end sharing the database reads the same alarms;
one of them evaluates them (see service.py). Blocking calls, small and indexed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from zeroscale.cloudwatch.data import LimitExceeded
from zeroscale.cloudwatch.rules import INSUFFICIENT_DATA
from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import Step, add_column, add_index, upgrade

metadata = MetaData()

alarms_table = Table(
    "cloudwatch_alarms",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("arn", String(2048), nullable=False),
    Column("doc", JSON, nullable=False),  # PutMetricAlarm's members, as given
    Column("state", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("reason_data", Text, nullable=True),  # a JSON document, as SetAlarmState or an evaluation wrote it
    Column("state_updated_at", Double, nullable=False),
    Column("transitioned_at", Double, nullable=False),
    Column("config_updated_at", Double, nullable=False),
    Column("creator", String(128), nullable=True),  # the IAM user id that created it (None: the admin)
)

history_table = Table(
    "cloudwatch_alarm_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alarm", String(255), nullable=False, index=True),
    Column("at", Double, nullable=False, index=True),
    Column("item_type", String(32), nullable=False),  # ConfigurationUpdate | StateUpdate | Action
    Column("summary", Text, nullable=False),
    Column("data", Text, nullable=False),  # a JSON document
)

STEPS: list[Step] = [
    add_column("cloudwatch_alarms", Column("creator", String(128), nullable=True)),
    # a user's alarms, counted at each alarm it creates
    add_index("cloudwatch_alarms", "cloudwatch_alarms_creator", ("creator",)),
]

HISTORY_KEPT_S = 14 * 24 * 3600  # CloudWatch keeps alarm history for two weeks


@dataclass
class Alarm:
    name: str
    arn: str
    doc: dict[str, Any]
    state: str
    reason: str
    reason_data: str | None
    state_updated_at: float
    transitioned_at: float
    config_updated_at: float


@dataclass(frozen=True)
class HistoryItem:
    alarm: str
    at: float
    item_type: str
    summary: str
    data: str


def _alarm(row: Any) -> Alarm:
    return Alarm(
        row.name,
        row.arn,
        dict(row.doc),
        row.state,
        row.reason,
        row.reason_data,
        float(row.state_updated_at),
        float(row.transitioned_at),
        float(row.config_updated_at),
    )


class AlarmStore:
    def __init__(
        self, url: str, most: int = 0, *, most_per_user: int = 0, creator: Callable[[], str] | None = None
    ) -> None:
        """``most``: the alarms held at most (``--max-resources``; 0: no limit): each is evaluated every
        period, so a caller who could add them without end would take the server's time too.
        ``most_per_user``: those one IAM user may have created (``--max-resources-per-user``); ``creator``:
        the IAM user id an alarm being created is made for ("" for the admin, whom it does not bound)."""
        self._engine = make_engine(url)
        self._lock = threading.Lock()
        self._most = most
        self._most_per_user = most_per_user
        self._creator = creator or (lambda: "")
        upgrade(self._engine, "cloudwatch", metadata, STEPS)

    def put(self, name: str, arn: str, doc: dict[str, Any], now: float) -> Alarm:
        """Create the alarm (INSUFFICIENT_DATA, unchecked) or replace its configuration (its state stays)."""
        try:
            return self._put(name, arn, doc, now)
        except IntegrityError:  # created meanwhile through another front end: this put replaces it
            return self._put(name, arn, doc, now)

    def _put(self, name: str, arn: str, doc: dict[str, Any], now: float) -> Alarm:
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(select(alarms_table).where(alarms_table.c.name == name)).first()
            creator = self._creator() if row is None else ""
            if row is None and self._most > 0:
                held = conn.execute(select(func.count()).select_from(alarms_table)).scalar_one()
                if held >= self._most:
                    raise LimitExceeded(
                        f"The quota for alarms for this customer has already been reached: {held} alarms, "
                        f"at most {self._most} (zeroscale serve --max-resources). Delete alarms first."
                    )
            if creator and self._most_per_user > 0:
                mine = select(func.count()).where(alarms_table.c.creator == creator)
                held = conn.execute(mine).scalar_one()
                if held >= self._most_per_user:
                    raise LimitExceeded(
                        f"The quota for alarms for this IAM user has already been reached: {held} alarms, "
                        f"at most {self._most_per_user} (zeroscale serve --max-resources-per-user). Delete "
                        "alarms first."
                    )
            if row is None:
                values = {
                    "name": name,
                    "arn": arn,
                    "doc": doc,
                    "state": INSUFFICIENT_DATA,
                    "reason": "Unchecked: Initial alarm creation",
                    "reason_data": None,
                    "state_updated_at": now,
                    "transitioned_at": now,
                    "config_updated_at": now,
                }
                conn.execute(insert(alarms_table).values(**values, creator=creator or None))
                summary, alarm = f'Alarm "{name}" created', Alarm(**values)  # type: ignore[arg-type]
            else:
                conn.execute(
                    update(alarms_table)
                    .where(alarms_table.c.name == name)
                    .values(doc=doc, config_updated_at=now)
                )
                alarm = _alarm(row)
                alarm.doc, alarm.config_updated_at = doc, now
                summary = f'Alarm "{name}" updated'
            data = {"type": "Create" if row is None else "Update", "updatedAlarm": doc}
            conn.execute(insert(history_table).values(_item(name, now, "ConfigurationUpdate", summary, data)))
        return alarm

    def get(self, name: str) -> Alarm | None:
        with self._lock, self._engine.connect() as conn:
            row = conn.execute(select(alarms_table).where(alarms_table.c.name == name)).first()
        return None if row is None else _alarm(row)

    def all(self) -> list[Alarm]:
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(select(alarms_table).order_by(alarms_table.c.name)).all()
        return [_alarm(r) for r in rows]

    def missing(self, names: list[str]) -> list[str]:
        have = {a.name for a in self.all()}
        return [n for n in names if n not in have]

    def delete(self, names: list[str], now: float) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(delete(alarms_table).where(alarms_table.c.name.in_(names)))
            for name in names:
                data = {"type": "Delete"}
                item = _item(name, now, "ConfigurationUpdate", f'Alarm "{name}" deleted', data)
                conn.execute(insert(history_table).values(item))

    def set_state(
        self, name: str, state: str, reason: str, reason_data: str | None, now: float, *, expect: str
    ) -> bool:
        """Move the alarm from ``expect`` to ``state`` (a compare-and-set: False when its state was no longer
        ``expect``, or it is gone), recording the change in its history."""
        with self._lock, self._engine.begin() as conn:
            c = alarms_table.c
            result = conn.execute(
                update(alarms_table)
                .where(c.name == name, c.state == expect)
                .values(
                    state=state,
                    reason=reason,
                    reason_data=reason_data,
                    state_updated_at=now,
                    transitioned_at=now,
                )
            )
            if not result.rowcount:
                return False
            data = {
                "version": "1.0",
                "oldState": {"stateValue": expect},
                "newState": {
                    "stateValue": state,
                    "stateReason": reason,
                    **({"stateReasonData": json.loads(reason_data)} if reason_data else {}),
                },
            }
            summary = f"Alarm updated from {expect} to {state}"
            conn.execute(insert(history_table).values(_item(name, now, "StateUpdate", summary, data)))
        return True

    def touch(self, name: str, state: str, reason: str, reason_data: str | None, now: float) -> None:
        """A new evaluation that kept the state ``state``: its reason and time (StateUpdatedTimestamp), no
        history; nothing when the alarm is no longer in that state (changed meanwhile)."""
        with self._lock, self._engine.begin() as conn:
            conn.execute(
                update(alarms_table)
                .where(alarms_table.c.name == name, alarms_table.c.state == state)
                .values(reason=reason, reason_data=reason_data, state_updated_at=now)
            )

    def record(self, name: str, now: float, item_type: str, summary: str, data: dict[str, Any]) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(insert(history_table).values(_item(name, now, item_type, summary, data)))

    def history(
        self,
        name: str | None,
        item_type: str | None,
        start: float | None,
        end: float | None,
        *,
        newest_first: bool = True,
    ) -> list[HistoryItem]:
        c = history_table.c
        query = select(history_table)
        if name is not None:
            query = query.where(c.alarm == name)
        if item_type is not None:
            query = query.where(c.item_type == item_type)
        if start is not None:
            query = query.where(c.at >= start)
        if end is not None:
            query = query.where(c.at <= end)
        order = (c.at.desc(), c.id.desc()) if newest_first else (c.at, c.id)
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query.order_by(*order)).all()
        return [HistoryItem(r.alarm, float(r.at), r.item_type, r.summary, r.data) for r in rows]

    def prune(self, before: float) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(delete(history_table).where(history_table.c.at < before))

    def close(self) -> None:
        self._engine.dispose()


def _item(name: str, at: float, item_type: str, summary: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "alarm": name,
        "at": at,
        "item_type": item_type,
        "summary": summary,
        "data": json.dumps(data, separators=(",", ":")),
    }
