"""ditkit: Diff Interpretation Tuning."""

__version__ = "0.1.0"
