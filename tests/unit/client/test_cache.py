"""The client's cache bookkeeping (Chubby §2.5): what it keeps, and the answers it must not
keep because an invalidation or a flush overtook them."""

from __future__ import annotations

from chubbypy.client._cache import CachedNode, ClientCache

NODE = CachedNode(None, b"")
OTHER = CachedNode(None, b"other")


def test_a_registered_answer_is_kept_until_invalidated() -> None:
    """An answer the master registered is kept; an INVALIDATE drops it."""
    cache = ClientCache()
    started = cache.reading("/a")
    cache.read_done("/a", started, NODE, cached=True, event_sequence=5, usable=True)
    assert cache.get("/a") == NODE
    cache.invalidate("/a", 5)
    assert cache.get("/a") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_unregistered_or_unusable_answers_are_not_kept() -> None:
    """Not cached by the master (busy name), or the cache unusable (jeopardy): not kept."""
    cache = ClientCache()
    cache.read_done("/a", cache.reading("/a"), NODE, cached=False, event_sequence=1, usable=True)
    cache.read_done("/b", cache.reading("/b"), NODE, cached=True, event_sequence=1, usable=False)
    cache.read_done("/c", cache.reading("/c"), None, cached=True, event_sequence=1, usable=True)
    assert len(cache) == 0


def test_an_invalidation_that_overtakes_the_answer_wins() -> None:
    """An INVALIDATE numbered at or above the answer's event number arrived first: the
    answer is about an older value and is not kept; an older INVALIDATE does not matter."""
    cache = ClientCache()
    started = cache.reading("/a")
    cache.invalidate("/a", 7)
    cache.read_done("/a", started, NODE, cached=True, event_sequence=7, usable=True)
    assert cache.get("/a") is None
    started = cache.reading("/a")
    cache.invalidate("/a", 6)
    cache.read_done("/a", started, OTHER, cached=True, event_sequence=7, usable=True)
    assert cache.get("/a") == OTHER


def test_a_flush_forgets_everything_and_every_answer_already_on_its_way() -> None:
    """After a flush (jeopardy, fail-over) no answer to an earlier read is kept."""
    cache = ClientCache()
    cache.read_done("/a", cache.reading("/a"), NODE, cached=True, event_sequence=1, usable=True)
    started = cache.reading("/b")
    cache.flush()
    cache.read_done("/b", started, NODE, cached=True, event_sequence=1, usable=True)
    assert len(cache) == 0
