"""The project's error hierarchy: every error a user can act on derives from OnnxPruneError.

The CLI prints such an error as one red line and exits with status 2; any other exception is
a bug and keeps its traceback.
"""

MESSAGE_LIMIT = 300
"""The most characters of a third-party error message quoted inside one of ours."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type name when empty), cut to MESSAGE_LIMIT.

    Messages of onnx, onnxruntime or the json module can run to pages; ours quote one line.
    """
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:MESSAGE_LIMIT]


class OnnxPruneError(Exception):
    """Base of every error whose message tells the user what is wrong and what to do."""


class ModelLoadError(OnnxPruneError):
    """The model file is missing, empty, truncated, not ONNX, or its external data is bad."""


class UnsupportedModelError(OnnxPruneError):
    """The model loads but uses something this tool cannot analyse."""


class InputDataError(OnnxPruneError):
    """Images or tensors given for calibration cannot be used with this model."""


class ConversionError(OnnxPruneError):
    """A Darknet cfg/weights pair or a model export cannot be converted."""


class MissingExtraError(OnnxPruneError):
    """An optional dependency (an extra such as ``export`` or ``plot``) is not installed."""


class OutputPathError(OnnxPruneError):
    """A file to write (``--json``, ``--plot``, ``-o`` ...) cannot be written where asked."""


class ProviderError(OnnxPruneError):
    """An execution provider asked for is unknown, not installed, or not what the session runs."""


class OutOfMemoryError(OnnxPruneError):
    """The machine ran out of memory; the message names the ``--batch-size`` to lower to."""


class FetchError(OnnxPruneError):
    """A registry package cannot be downloaded, or the file inside it is not the one expected."""
