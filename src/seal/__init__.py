"""seal: self-adapting language models (SEAL, Zweiger et al., arXiv:2506.10943)."""

__version__ = "0.1.0"
