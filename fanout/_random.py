"""fanout's own random numbers: a private generator, never the ``random`` module's shared one.

The ``random`` module's functions share one state with the application. An application
that calls ``random.seed(0)`` (tests, simulations, model training) would make fanout's event
ids and generated visitor ids repeat from run to run and across processes seeded alike, and
ids are what the collector and the vendors deduplicate on: a repeated id is an event
silently dropped as a duplicate. Drawing from the shared state would also shift the
application's own reproducible sequence by every event it tracks, and a thread drawing ids
while a test framework (hypothesis) draws its examples is reported as a bug there.

A private :class:`random.Random`, seeded from ``os.urandom`` and reseeded in a forked child
(as CPython does for the shared one, so forked workers never repeat each other's ids). Not
for secrets: ids need uniqueness, not unpredictability.
"""

from __future__ import annotations

import os
import random

__all__ = ["getrandbits", "uniform"]

_GENERATOR = random.Random()  # seeded from os.urandom
getrandbits = _GENERATOR.getrandbits
uniform = _GENERATOR.uniform

if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_GENERATOR.seed)
