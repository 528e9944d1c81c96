"""fetch: bring the plan into the volume, verified, resumable, then write the lock.

The warm path (lock matches the plan, files present with their sizes) lives in
:mod:`modelcache.fetch.runner` and imports no HTTP library: it makes no request at all.
"""

from modelcache.fetch.runner import FetchResult, run_fetch

__all__ = ["FetchResult", "run_fetch"]
