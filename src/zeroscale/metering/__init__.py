"""Metering: durable usage records fed by ``zeroscale.events``, prices, and usage/cost reports.

records (plain values) <- pricing (pure) <- reports (pure); ledger (the only database code);
sink (EventBus -> queue -> ledger); service (wiring); rest (``/zeroscale/v1/usage``).
Import the modules themselves: this package imports nothing, so the CLI loads only what it uses."""
