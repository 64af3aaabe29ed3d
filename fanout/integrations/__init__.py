"""Integrations with the host: frameworks, task queues, serverless handlers, metrics.

Where events are born: the framework integrations fill ``fanout.context`` and tie delivery
to the host's lifecycle (ASGI lifespan, Celery's process shutdown, a serverless handler's
return); they never deliver anything themselves. Each module sits behind its own optional
extra, so the core stays small; importing this package imports none of them. Import the one
you use (``fanout.integrations.asgi``, ``.wsgi``, ``.django``, ``.flask``, ``.celery``,
``.serverless``, ``.otel``); :mod:`fanout.integrations.browser` reads the browser's ids.
"""
