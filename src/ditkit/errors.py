"""One exception family for user mistakes: messages say what, where, and how to fix it."""


class DitkitError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug."""


class ConfigError(DitkitError, ValueError):
    """A config field or preset holds a value ditkit cannot use."""


class ModelLoadError(DitkitError):
    """A base model or tokenizer could not be resolved or loaded."""


class DiffFormatError(DitkitError):
    """A weight-diff file or folder is corrupt, truncated, unsafe or of an unknown format."""


class DiffMismatchError(DitkitError):
    """A weight diff does not fit the base model it is applied to."""


class DataError(DitkitError):
    """Task data (topics, questions, examples) is empty, malformed or leaks across splits."""


class RemoteError(DitkitError):
    """An OpenAI-compatible server could not be reached or kept failing."""
