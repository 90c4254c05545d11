"""The model runtime every part that runs a model shares: processor backends (cpu, neuron, cuda), task heads,
shape buckets and the batching engine. serving runs it behind HTTP, compile traces it, verify computes its fp32
reference with it. Needs torch, not Ray.
"""
