"""Integration tests talk to real servers on 127.0.0.1 (Ray Serve, moto S3). Their session-wide fixtures
(``local_ray``, ``local_serve``, ``moto_s3_endpoint``, ``minilm``, ...) live in :mod:`tests.servers`,
registered by ``tests/conftest.py`` so that ``tests/system/`` shares the same single Ray and moto server.
"""
