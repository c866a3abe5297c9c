"""The alarms' table with front ends on one PostgreSQL database."""

from __future__ import annotations

from sqlalchemy import insert

from heldtx import beside_a_held_transaction
from pgserver import PostgresServer
from zeroscale.cloudwatch.alarms import AlarmStore, alarms_table
from zeroscale.cloudwatch.rules import INSUFFICIENT_DATA


def test_an_alarm_put_through_two_front_ends_at_once_is_one_alarm_with_the_last_configuration(
    postgres: PostgresServer,
) -> None:
    """Both front ends find no alarm of the name and insert one: the second insert waits for the first
    transaction and meets its row. The put then replaces that alarm's configuration, as a put of an
    existing alarm does (it was an internal failure)."""
    url = postgres.create_database()
    store = AlarmStore(url)
    first = {"Threshold": 1, "EvaluationPeriods": 1}
    theirs = [
        insert(alarms_table).values(
            name="latency",
            arn="arn:aws:cloudwatch:us-east-1:000000000000:alarm:latency",
            doc=first,
            state=INSUFFICIENT_DATA,
            reason="Unchecked: Initial alarm creation",
            reason_data=None,
            state_updated_at=1.0,
            transitioned_at=1.0,
            config_updated_at=1.0,
            creator=None,
        )
    ]
    second = {"Threshold": 5, "EvaluationPeriods": 1}
    arn = "arn:aws:cloudwatch:us-east-1:000000000000:alarm:latency"
    beside_a_held_transaction(url, theirs, lambda: store.put("latency", arn, second, 2.0))
    alarms = store.all()
    assert [(a.name, a.doc, a.state) for a in alarms] == [("latency", second, INSUFFICIENT_DATA)]
    store.close()
