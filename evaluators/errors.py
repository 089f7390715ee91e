"""Errors raised by the evaluators; a bad input file names its path and line."""

from __future__ import annotations


class EvaluatorError(Exception):
    """Base class for evaluator errors."""


class InputFileError(EvaluatorError, ValueError):
    """A question or answer file that can not be read: names the path and the 1-based line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


class JudgeRunError(EvaluatorError):
    """Some judge calls failed; the completed judgments are stored, so a re-run resumes."""

    def __init__(self, failed: int, total: int, first_error: str) -> None:
        super().__init__(f"{failed} of {total} judge calls failed (first: {first_error}); "
                         "completed judgments are cached, re-run to resume")
        self.failed = failed
        self.total = total
