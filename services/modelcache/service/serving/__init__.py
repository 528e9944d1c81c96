"""Requests to models: FIFO places, per-model runners and batchers, typed model handles. No HTTP."""
