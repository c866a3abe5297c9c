"""Prometheus metrics: a leaf sink fed by the router and the workers."""
