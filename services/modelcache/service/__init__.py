"""The read-only, offline model service.

Arrows point one way: ``startup`` (the fail-fast gate, standard library only) runs first;
``engines`` load and run models and know nothing of HTTP; ``routes`` speak HTTP and call
engines through the ``registry``; nothing here can download.
"""
