"""ctbench: a benchmark and reproducibility suite for continuous-time deep learning in PyTorch."""

__version__ = "0.1.0"
