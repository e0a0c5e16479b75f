"""The errors users meet. Every ``MlpipeError`` is bad input: the CLI prints its one-line message and exits 2."""

from __future__ import annotations


class MlpipeError(Exception):
    """Base of every error caused by the user's input; ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class ConfigError(MlpipeError):
    """The config file is missing, unparseable, or has an unknown key or a wrong type."""


class DataError(MlpipeError):
    """The input data cannot be used: missing file or column, wrong type, too few rows, ..."""


class NotFoundError(MlpipeError):
    """A dataset or model reference that does not exist."""


class IntegrityError(MlpipeError):
    """A stored artifact does not match the digest the registry holds for it."""


class BackendError(MlpipeError):
    """A tracking server or database given by the user cannot be reached or used (wrong host, database or
    driver)."""


class ParityError(MlpipeError):
    """The ONNX model does not reproduce the scikit-learn model; nothing is registered. Not the input's
    fault, so it exits 1, but with the same one-line message."""

    exit_code = 1
