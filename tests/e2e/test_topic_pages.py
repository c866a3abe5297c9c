"""SNS-style topics page their lists as boto3's paginators ask, and a NextToken this server did not answer
is refused by name (it was read as the first page)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError

from zeroscale.api.query import PAGE
from zeroscale.testing import ServerProcess


def test_lists_page_and_a_foreign_token_is_refused(server_factory: Callable[..., ServerProcess]) -> None:
    sns = server_factory().client("sns")
    arns = {sns.create_topic(Name=f"paged-{n:03}")["TopicArn"] for n in range(PAGE + 5)}
    pages = list(sns.get_paginator("list_topics").paginate())
    assert [len(p["Topics"]) for p in pages] == [PAGE, 5]
    assert {t["TopicArn"] for p in pages for t in p["Topics"]} == arns
    for bad in ("not-a-token", str(PAGE + 6)):
        with pytest.raises(ClientError) as err:
            sns.list_topics(NextToken=bad)
        assert err.value.response["Error"]["Code"] == "InvalidParameter"
        assert "NextToken" in err.value.response["Error"]["Message"]
    topic = sorted(arns)[0]
    for n in range(PAGE + 1):
        sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=f"http://127.0.0.1:9/{n}")
    pages = list(sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic))
    assert [len(p["Subscriptions"]) for p in pages] == [PAGE, 1]
    with pytest.raises(ClientError) as err:
        sns.list_subscriptions_by_topic(TopicArn=topic, NextToken="x")
    assert err.value.response["Error"]["Code"] == "InvalidParameter"
