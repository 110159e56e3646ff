"""modelbuild: declarative, reproducible, content-addressed builds of ML models."""

__version__ = "0.1.0"
