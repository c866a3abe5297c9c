"""Persistent resource state."""

from zeroscale.store.db import AlreadyExists, Record, Store

__all__ = ["AlreadyExists", "Record", "Store"]
