"""Evaluation: metrics, LLM judges and guessers, and the statistics behind the report."""
