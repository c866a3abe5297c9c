"""IAM's account quota on users, with a real store: past it CreateUser is IAM's LimitExceeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroscale.api import iam_query
from zeroscale.api.iam_query import IamQueryService
from zeroscale.errors import ZeroscaleError
from zeroscale.iam.authz import Authorizer
from zeroscale.iam.secrets import SecretBox
from zeroscale.iam.store import IamStore


def test_users_are_held_to_the_accounts_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iam_query, "MAX_USERS", 2)  # 5000, as IAM's, in the server
    store = IamStore(f"sqlite:///{tmp_path / 'iam.db'}", SecretBox.load_or_create(tmp_path / "iam.key"))
    service = IamQueryService(store, Authorizer(store, "AKADMIN", "secret", "us-east-1", "000000000000"))
    service.create_user({"UserName": "a"}, "AKADMIN")
    service.create_user({"UserName": "b"}, "AKADMIN")
    with pytest.raises(ZeroscaleError) as err:
        service.create_user({"UserName": "c"}, "AKADMIN")
    assert (err.value.code, err.value.status) == ("LimitExceeded", 409)
    assert err.value.message == "Cannot exceed quota for UsersPerAccount: 2"
    service.delete_user({"UserName": "a"}, "AKADMIN")
    service.create_user({"UserName": "c"}, "AKADMIN")
    store.close()
