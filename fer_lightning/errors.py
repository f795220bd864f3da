"""User-facing errors: one line that names the problem and the fix, no traceback."""


class FERError(Exception):
    """An expected failure caused by input or environment, shown to the user as one line.

    Entry points catch it, print ``error: <message>`` to stderr and exit with status 2.
    The message must name the file or key at fault and say how to fix it.
    """

    exit_status = 2
    label = "error"


class Preempted(FERError):
    """The job was told to stop (preemption, time limit) and saved where it was: not a failure of its input."""

    exit_status = 3
    label = "preempted"


def expected_error(exc: BaseException) -> FERError | None:
    """The :class:`FERError` that ``exc`` is, or that Hydra's ``InstantiationException`` wraps (at any depth: Hydra
    wraps what a constructor raises, once per nested ``_target_``); None for an unexpected error."""
    from hydra.errors import InstantiationException  # here: the ONNX runtime imports this module without Hydra

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc if isinstance(exc, FERError) else None


def one_line(value: object) -> str:
    """``value`` as text with its whitespace collapsed, so a cause (an OS or server message) fits one line."""
    return " ".join(str(value).split())


def shortened(value: object, width: int = 120) -> str:
    """:func:`one_line` of ``value``; longer than ``width``, it ends at the last sentence (or else word) that fits,
    with an ellipsis."""
    line = one_line(value)
    if len(line) <= width:
        return line
    cut = line[: width - 3]
    # a sentence end, else a word end, in the second half; a word longer than that (a path) is cut inside
    sentence, word, half = cut.rfind(". "), cut.rfind(" "), width // 2
    end = sentence if sentence > half else word if word > half else len(cut)
    return cut[:end].rstrip(" ,;:.") + "..."
