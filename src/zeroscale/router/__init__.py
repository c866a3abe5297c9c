"""Per-endpoint routing: choose a variant and a free worker, forward the request, enforce limits."""
