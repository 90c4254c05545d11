"""Serving integration helpers; the session fixtures (``minilm``, ``serving_cache``, ...) are in
:mod:`tests.servers`, shared with ``tests/system/``."""

from tests.servers import BUNDLED, deploy_model, get, minilm_config, model_config, post

__all__ = ["BUNDLED", "deploy_model", "get", "minilm_config", "model_config", "post"]
