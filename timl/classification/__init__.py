"""The original TIML command names (``python -m timl.classification.train|predict|inspect``), as thin aliases."""
