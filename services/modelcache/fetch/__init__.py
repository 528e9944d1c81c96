"""fetch: bring the plan into the volume, verified, resumable, then write the lock.

The warm path (lock matches the plan, files present with their sizes) lives in
:mod:`modelcache.fetch.runner` and imports no HTTP library: it makes no request at all.
"""

import os

# read by huggingface_hub when it is first imported (by fetch's cold path and `lock`)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from modelcache.fetch.execute import FetchResult
from modelcache.fetch.runner import run_fetch

__all__ = ["FetchResult", "run_fetch"]
