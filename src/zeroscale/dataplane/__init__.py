"""The native data plane's Python side: what it relays, what it may serve by itself (docs/dataplane.md)."""
