"""modelcache: verified, pinned model caches in one volume, served offline."""

__version__ = "0.1.0"
