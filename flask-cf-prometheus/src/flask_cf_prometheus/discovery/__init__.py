"""cf-discovery: keep Prometheus's scrape jobs equal to the Cloud Foundry fleet.

Only `main`, the console script, is public. Each private module holds one concern and
uses only the modules before it: _errors, _http, _uaa, _api, _selection, _jobs, _files,
_metrics, _passes and _cli. Only the Python standard library is needed.
"""

from ._cli import main

__all__ = ["main"]
