"""eks-inference: NLP model inference on Amazon EKS, measured and priced per processor."""

__version__ = "0.1.0"
