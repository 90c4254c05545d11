"""Observability as code: the managed scraper's configuration, the alert rules and the Grafana dashboards.

Rendered from config by :mod:`eks_inference.constructs.observability` at synth; the dashboards and the example
rules of each environment are also written to ``observability/`` by ``python -m eks_inference.observability``
(a test fails when the committed files are out of date).
"""
