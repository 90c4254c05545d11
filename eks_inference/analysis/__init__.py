"""Analyse and report: group result files into series, price and rank targets, per-second timelines, and the
writers (JSON, CSV, PNG, a self-contained HTML page, console tables) of ``eks-inference loadtest report``.
"""
