"""TIML: train, compare, explain and serve image classifiers from a table, on MLflow and Keras 3."""

__version__ = "0.1.0"
