"""Tracing/compiling models for a processor and publishing models and artifacts to the repository."""
