"""A faithful emulator of the Anthropic Message Batches API (SPEC section 6).

The package is split by job: ``records`` (one batch, times and ids), ``clock`` (the emulator's
time and the ``Date`` header), ``errors`` (the API's refusals), ``faults`` (the fault configuration
and the rate limiter), ``validation`` (create bodies), ``stats`` (request counters), ``store``
(the batches in listing order, and the clock), ``state`` (the operations and the lifecycle over
the store), ``injection`` (where each fault hits a request), ``seed`` (seed files and the random
mix), ``results`` (JSON Lines results), ``app`` (the ``/v1`` API), ``control`` (the
``/_emulator`` control surface), ``cli`` (``reaper emulator``) and ``harness`` (the emulator
served in-process or on loopback: the demo, tests and benchmarks run on it).

This ``__init__`` imports nothing: ``reaper.cli`` loads ``reaper.emulator.options`` for every
command, and that must stay cheap. The emulator never imports the reaper's own modules: it stands
for the real API and must not share the reaper's mistakes.
"""
