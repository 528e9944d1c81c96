"""Imported by the model-process zygote only (see :mod:`modelcache.service.models.zygote`).

Imports what ``_MODELCACHE_PRELOAD`` names. A module that fails to import is skipped: the
model process that needs it imports it again and reports the error as its load failure.
"""

from __future__ import annotations

import importlib
import json
import os


def _preload() -> None:
    try:
        wanted = json.loads(os.environ.get("_MODELCACHE_PRELOAD", "{}"))
    except ValueError:
        return
    for name in wanted.get("modules", []):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    families = wanted.get("families", [])
    if not families:
        return
    try:
        from transformers.models.auto.configuration_auto import model_type_to_module_name
    except Exception:
        return
    for family in families:
        package = model_type_to_module_name(family)
        for part in (
            "configuration",
            "modeling",
            "tokenization",
            "tokenization_{}_fast",
            "image_processing",
            "processing",
        ):
            module = part.format(package) if "{}" in part else f"{part}_{package}"
            try:
                importlib.import_module(f"transformers.models.{package}.{module}")
            except Exception:
                pass


_preload()
