"""pytest plugin of modelcache.testing (entry point ``pytest11``: ``modelcache``).

Fixtures: ``modelcache_stack`` (session scope: one :class:`~modelcache.testing.ModelCacheStack`
for the whole run, started on first use) and ``modelcache_client`` (the official ``openai``
client for it). Options, on the command line or in the ini file (the command line wins):

=====================================  ==================================  ====================================
command line                           ini                                 meaning
=====================================  ==================================  ====================================
``--modelcache-offline``               ``modelcache_offline = true``       serve the tiny model set, no Hub
``--modelcache-model KEY=VALUE``       ``modelcache_models`` (lines)       a downloader setting (repeatable)
``--modelcache-volume NAME``           ``modelcache_volume``               fill and keep this volume (warm)
``--modelcache-downloader-image IMG``  ``modelcache_downloader_image``     the downloader's image
``--modelcache-service-image IMG``     ``modelcache_service_image``        the service's image
``--modelcache-api-key KEY``           ``modelcache_api_key``              the key the service requires
``--modelcache-start-timeout SECONDS`` ``modelcache_start_timeout``        how long to wait for ready (600)
=====================================  ==================================  ====================================

Nothing here runs, and nothing heavier than the standard library is imported, unless a test
asks for one of the fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_OPTIONS = (
    # (name, help, default)
    ("downloader_image", "image of the downloader (default modelcache-downloader:0.1.0)", None),
    ("service_image", "image of the model service (default modelcache-service:0.1.0)", None),
    ("volume", "a named volume to fill and keep between runs (default: a new one, removed at the end)", None),
    ("api_key", "an API key the service then requires (the client sends it)", None),
    ("start_timeout", "seconds to wait for the service to be ready (default 600)", "600"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modelcache", "modelcache stack (modelcache.testing)")
    group.addoption(
        "--modelcache-offline",
        action="store_true",
        default=None,
        help="serve the tiny model set (random weights, built locally) instead of the Hub: no network, no token",
    )
    parser.addini("modelcache_offline", "serve the tiny model set instead of the Hub", type="bool", default=False)
    group.addoption(
        "--modelcache-model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a downloader setting, e.g. MODELCACHE_TEXT_EMBEDDING=org/name (repeatable)",
    )
    parser.addini("modelcache_models", "downloader settings, KEY=VALUE, one per line", type="linelist", default=[])
    for name, text, default in _OPTIONS:
        group.addoption(f"--modelcache-{name.replace('_', '-')}", default=None, help=text)
        parser.addini(f"modelcache_{name}", text, default=default)


def _pairs(items: list[str], where: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"{where}: {item!r} is not KEY=VALUE (e.g. MODELCACHE_WHISPER=none)")
        out[key.strip()] = value.strip()
    return out


def stack_options(config: pytest.Config) -> dict[str, Any]:
    """The keyword arguments of ModelCacheStack that the options and ini settings give."""

    def value(name: str) -> Any:
        given = config.getoption(f"--modelcache-{name.replace('_', '-')}")
        return given if given is not None else (config.getini(f"modelcache_{name}") or None)

    offline = config.getoption("--modelcache-offline")
    models = _pairs(list(config.getini("modelcache_models")), "modelcache_models")
    models.update(_pairs(config.getoption("--modelcache-model"), "--modelcache-model"))
    kwargs: dict[str, Any] = {
        "models": models,
        "offline": bool(config.getini("modelcache_offline")) if offline is None else offline,
        "volume": value("volume"),
        "api_key": value("api_key"),
        "start_timeout": float(value("start_timeout") or 600),
    }
    for image in ("downloader_image", "service_image"):
        if value(image):
            kwargs[image] = value(image)
    return kwargs


@pytest.fixture(scope="session")
def modelcache_stack(pytestconfig: pytest.Config) -> Iterator[Any]:
    """One running modelcache stack for the session (a :class:`modelcache.testing.ModelCacheStack`)."""
    from modelcache.testing import ModelCacheStack

    with ModelCacheStack(**stack_options(pytestconfig)) as stack:
        yield stack


@pytest.fixture(scope="session")
def modelcache_client(modelcache_stack: Any) -> Any:
    """The official ``openai.OpenAI`` client pointed at the session's stack."""
    return modelcache_stack.openai_client()
