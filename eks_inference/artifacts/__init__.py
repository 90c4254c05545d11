"""Artifact primitives shared by serving, compile and verify: manifests and their hashing, cache keys, and the
resolution of a pinned model or compiled artifact from its repository (fetch, verify, hand back a local path).

Resolution never imports the compiler: whoever may compile on a miss passes its compile function in.
"""
