"""The Ray Serve application (images and local mode alike): HTTP API, batching, replica metrics, verified weights.

Import-light on purpose: ``serve_config`` (pure) and ``api`` need neither torch nor Ray; the model runtime they
drive lives in :mod:`eks_inference.runtime`; only ``app`` and ``local`` import Ray.
"""
