"""The web console at ``/console``: a single page served from the package, signed in with an access key
and secret, calling the server's own operations through a session (see ``app.py``)."""

from zeroscale.console.app import Console
from zeroscale.console.backend import Backend

__all__ = ["Backend", "Console"]
