"""Chargeward performance benchmarks: ``make bench``, or ``python -m benchmarks.bench_publish``
(release publishing) and ``python -m benchmarks.bench_verify`` (the charger's image verify).

Benchmarks run the real pipeline code in-process on generated keys and data; nothing here is
imported by ``chargeward`` or by the tests.  Figures are written to ``benchmarks/results/``.
"""
