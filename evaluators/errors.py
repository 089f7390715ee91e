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

    def __init__(self, failed: int, total: int, first_error: str, *,
                 judge_url: str | None = None) -> None:
        where = f"the judge at {judge_url} failed: " if judge_url else ""
        super().__init__(f"{where}{failed} of {total} judge calls failed (first: {first_error});"
                         " completed judgments are cached, re-run to resume")
        self.failed = failed
        self.total = total
        self.first_error = first_error
        self.judge_url = judge_url


class JudgeRequestError(EvaluatorError, ValueError):
    """A judge request that can not run; ``fields`` names the request fields at fault."""

    def __init__(self, fields: str | tuple[str, ...], reason: str) -> None:
        self.fields = (fields,) if isinstance(fields, str) else fields
        self.reason = reason
        super().__init__(f"{' / '.join(self.fields)}: {reason}")
