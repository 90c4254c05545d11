"""Drive load: HTTP clients, open- and closed-loop schedules, payloads, readiness and the run's own options.

``eks-inference loadtest run`` is built from here; what a step measured is recorded with :mod:`eks_inference.measure`
and judged by it, so a run and a later report agree. ``stub_server`` is a trivial endpoint for calibrating the client.
"""
