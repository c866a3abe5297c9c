"""IAM users, their access keys (secrets sealed by ``secrets.SecretBox``) and inline policies: tables on
the store's database URL, mirrored in memory so checking a request reads no database.

Front ends sharing the database share the users: every write bumps ``iam_state.revision`` in its own
transaction, and ``refresh`` (called every sync interval) reloads the mirror when another front end wrote,
so a key deleted or a Deny put through one front end holds on the others within that interval (IAM itself is
eventually consistent). The secrets are sealed with the server's key; ``iam_state.key_check`` identifies the
key that sealed them, and a front end started with another key is refused with what to do, rather than
failing to open them."""

from __future__ import annotations

import logging
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from zeroscale.iam.policy import MalformedPolicyDocument, Statement, deny_everything, parse, principal
from zeroscale.iam.secrets import KeyMismatch, SecretBox
from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import upgrade
from zeroscale.store.upsert import upsert

metadata = MetaData()
users = Table(
    "iam_users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("path", String(512), nullable=False),
    Column("created_at", Double, nullable=False),
)
keys = Table(
    "iam_access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("user_name", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("sealed_secret", String(255), nullable=False),
    Column("created_at", Double, nullable=False),
)
policies = Table(
    "iam_user_policies",
    metadata,
    Column("user_name", String(64), primary_key=True),
    Column("policy_name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
)

state = Table(
    "iam_state",
    metadata,
    Column("id", Integer, primary_key=True),  # one row, id 1
    Column("revision", BigInteger, nullable=False),  # bumped by every write of any front end
    Column("key_check", String(64), nullable=True),  # SecretBox.check of the key sealing the secrets
)
_BUMP = update(state).where(state.c.id == 1).values(revision=state.c.revision + 1)
_REVISION = select(state.c.revision).where(state.c.id == 1)

log = logging.getLogger("zeroscale.iam")

MAX_KEYS_PER_USER = 2
_ALPHABET = string.ascii_uppercase + string.digits


@dataclass
class User:
    name: str
    user_id: str
    path: str
    created_at: float
    policies: dict[str, str] = field(default_factory=dict)  # name -> document
    compiled: list[Statement] = field(default_factory=list)

    def compile(self) -> None:
        """``compiled`` from all of ``policies``. A stored document that the policy checks now refuse (they
        became stricter: an element that was ignored, a duplicate key) denies the user everything until it
        is replaced or deleted: evaluating the rest without it could drop its Deny, evaluating it as it
        was could keep an Allow meant to be conditional; and the server must still start."""
        compiled: list[Statement] = []
        for name, document in self.policies.items():
            try:
                compiled.extend(parse(document, principal(self.name, self.user_id)))
            except MalformedPolicyDocument as exc:
                log.error(
                    "IAM user %s: the stored policy %s is refused (%s); everything is denied to the user "
                    "until the policy is put again or deleted",
                    self.name,
                    name,
                    exc,
                )
                self.compiled = deny_everything()
                return
        self.compiled = compiled


@dataclass
class AccessKey:
    access_key_id: str
    user_name: str
    status: str
    secret: str  # in memory only
    created_at: float


class IamStore:
    """Thread-safe; each write is one transaction, then the in-memory mirror."""

    def __init__(self, db_url: str, box: SecretBox, key_path: str = "the IAM key") -> None:
        """``key_path``: where ``box``'s key came from, for the message when it is not the database's
        (``KeyMismatch``)."""
        self._engine = make_engine(db_url)
        self._box = box
        self._lock = threading.Lock()
        # told an access key's id when it stops signing anything (made inactive, or deleted): what holds
        # sessions of it ends them then, not at their next use (a key made active again revived them)
        self.key_ended: list[Callable[[str], None]] = []
        upgrade(self._engine, "iam", metadata)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(state).values(id=1, revision=0, key_check=None))
        except IntegrityError:
            pass  # there already
        self._check_key(key_path)
        self.users: dict[str, User] = {}
        self.keys: dict[str, AccessKey] = {}
        self._sealed: dict[str, str] = {}  # access key id -> its sealed secret, as the mirror last read it
        self._revision = -1
        # Moves with every write of this front end and every reload of another's: what was decided from
        # the mirror before it moved (the native data plane's grants) is decided again.
        self.generation = 0
        # told when ``generation`` moved (on the thread that wrote, or that reloaded the mirror)
        self.changed: list[Callable[[], None]] = []
        self.refresh()

    def _check_key(self, key_path: str) -> None:
        """The key that sealed the database's secrets is this server's, or KeyMismatch saying what to do.
        The first server to start records its key's check; a database from before the check was kept is
        taken as its secrets open."""
        mine = self._box.check()
        with self._engine.begin() as conn:
            stored = conn.execute(select(state.c.key_check).where(state.c.id == 1)).scalar_one()
            if stored is None:
                sealed = conn.execute(select(keys.c.sealed_secret).limit(1)).scalar_one_or_none()
                opens = True
                if sealed is not None:
                    try:
                        self._box.open(sealed)
                    except ValueError:
                        opens = False
                if opens:  # unless another front end starting at the same moment recorded its own first
                    unset = (state.c.id == 1) & state.c.key_check.is_(None)
                    conn.execute(update(state).where(unset).values(key_check=mine))
                    stored = conn.execute(select(state.c.key_check).where(state.c.id == 1)).scalar_one()
            if stored == mine:
                return
        raise KeyMismatch(
            f"{key_path} is not the key the database's IAM access keys were sealed with (another front "
            "end's, or an earlier data directory's): give every front end on this database the same key "
            "(copy that front end's iam.key, mode 0600, or point --iam-key-file at one shared copy)."
        )

    def refresh(self) -> bool:
        """Blocking. Reload the mirror when another front end (or this one, the first time) wrote since;
        True when it did."""
        with self._engine.connect() as conn:
            if conn.execute(_REVISION).scalar_one() == self._revision:
                return False
        with self._lock, self._engine.begin() as conn:
            revision = conn.execute(_REVISION).scalar_one()  # read with the rows: a later write reloads
            loaded_users: dict[str, User] = {}
            for row in conn.execute(select(users)).mappings():
                loaded_users[row["name"]] = User(row["name"], row["user_id"], row["path"], row["created_at"])
            for row in conn.execute(select(policies)).mappings():
                user = loaded_users.get(row["user_name"])
                if user is not None:
                    user.policies[row["policy_name"]] = row["document"]
            loaded_keys: dict[str, AccessKey] = {}
            sealed: dict[str, str] = {}
            for row in conn.execute(select(keys)).mappings():
                akid, seal = row["access_key_id"], row["sealed_secret"]
                known = self.keys.get(akid)
                secret = known.secret if known is not None and self._sealed.get(akid) == seal else None
                loaded_keys[akid] = AccessKey(
                    akid,
                    row["user_name"],
                    row["status"],
                    secret if secret is not None else self._box.open(seal),
                    row["created_at"],
                )
                sealed[akid] = seal
            for user in loaded_users.values():
                was = self.users.get(user.name)
                if was is not None and was.user_id == user.user_id and was.policies == user.policies:
                    user.compiled = was.compiled  # unchanged: compiling thousands again costs ~0.1 ms each
                else:
                    user.compile()
            self.users, self.keys, self._sealed = loaded_users, loaded_keys, sealed
            self._revision = revision
            self.generation += 1
        self._tell_changed()
        return True

    def _bump(self, conn: Connection) -> None:
        """Within a write's transaction (under the lock): the revision moves; when no other front end wrote
        since the mirror was loaded, the mirror (which the write updates itself) is still current."""
        conn.execute(_BUMP)
        self.generation += 1
        self._tell_changed()
        revision = conn.execute(_REVISION).scalar_one()
        if revision == self._revision + 1:
            self._revision = revision

    def _tell_changed(self) -> None:
        for callback in self.changed:
            callback()

    # ---- users ----
    def create_user(self, name: str, path: str) -> User:
        user = User(name, "AIDA" + "".join(secrets.choice(_ALPHABET) for _ in range(17)), path, time.time())
        with self._lock, self._engine.begin() as conn:
            conn.execute(
                insert(users).values(name=name, user_id=user.user_id, path=path, created_at=user.created_at)
            )
            self._bump(conn)
            self.users[name] = user
        return user

    def delete_user(self, name: str) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(delete(users).where(users.c.name == name))
            self._bump(conn)
            self.users.pop(name, None)

    # ---- access keys ----
    def create_key(self, user_name: str) -> AccessKey:
        akid = "AKIA" + "".join(secrets.choice(_ALPHABET) for _ in range(16))
        secret = secrets.token_urlsafe(30)[:40]
        key = AccessKey(akid, user_name, "Active", secret, time.time())
        seal = self._box.seal(secret)
        with self._lock, self._engine.begin() as conn:
            conn.execute(
                insert(keys).values(
                    access_key_id=akid,
                    user_name=user_name,
                    status="Active",
                    sealed_secret=seal,
                    created_at=key.created_at,
                )
            )
            self._bump(conn)
            self.keys[akid] = key
            self._sealed[akid] = seal
        return key

    def user_keys(self, user_name: str) -> list[AccessKey]:
        return sorted((k for k in self.keys.values() if k.user_name == user_name), key=lambda k: k.created_at)

    def set_key_status(self, akid: str, status: str) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(update(keys).where(keys.c.access_key_id == akid).values(status=status))
            self._bump(conn)
            self.keys[akid].status = status
        if status != "Active":
            self._ended(akid)

    def delete_key(self, akid: str) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(delete(keys).where(keys.c.access_key_id == akid))
            self._bump(conn)
            self.keys.pop(akid, None)
        self._ended(akid)

    def _ended(self, akid: str) -> None:
        for listener in self.key_ended:
            listener(akid)

    # ---- inline policies ----
    def put_policy(self, user: User, name: str, document: str) -> None:
        parse(document, principal(user.name, user.user_id))  # raises MalformedPolicyDocument: nothing stored
        with self._lock:
            # one statement: the same policy put through another front end meanwhile is replaced
            row = {"user_name": user.name, "policy_name": name, "document": document}
            with self._engine.begin() as conn:
                upsert(conn, policies, [row])
                self._bump(conn)
            user = self.users.get(user.name, user)  # the mirror's, should a reload have replaced it
            user.policies[name] = document
            user.compile()

    def delete_policy(self, user: User, name: str) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(
                delete(policies).where((policies.c.user_name == user.name) & (policies.c.policy_name == name))
            )
            self._bump(conn)
            user = self.users.get(user.name, user)  # the mirror's, should a reload have replaced it
            user.policies.pop(name, None)
            user.compile()

    def close(self) -> None:
        self._engine.dispose()
