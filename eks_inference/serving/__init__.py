"""Ray Serve application, processor backends (cpu, neuron, cuda) and verified artifact fetch.

Import-light on purpose: ``serve_config`` (pure), ``api`` and ``bucketing`` need neither torch nor Ray;
``engine`` needs torch but not Ray; only ``app`` and ``local`` import Ray.
"""
