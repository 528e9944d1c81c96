"""Smoke test of the model service, with modelcache's pytest plugin: no conftest.py needed."""

from modelcache.testing import TINY_TEXT_EMBEDDING, TINY_WHISPER


def test_models_are_served(modelcache_client):
    assert {m.id for m in modelcache_client.models.list()} == {TINY_WHISPER, TINY_TEXT_EMBEDDING}


def test_embeddings(modelcache_client):
    answer = modelcache_client.embeddings.create(model=TINY_TEXT_EMBEDDING, input=["hello", "world"])
    assert [len(item.embedding) for item in answer.data] == [64, 64]
