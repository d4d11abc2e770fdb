"""The exceptions the CLI turns into one line and an exit code:

- `UserError`: bad input from the user; exit 2.
- `IncompleteRun`: a stage finished but left work undone (teacher or judge requests that failed);
  its outputs are saved and a rerun retries only what failed; exit 3 (`EXIT_INCOMPLETE`).
- `EmptyRun`: a stage finished with nothing to show (gen: no reply accepted); exit 4 (`EXIT_EMPTY`).
"""

EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3
EXIT_EMPTY = 4


class UserError(Exception):
    """Bad input from the user. The message states the rule, the offending value and the fix."""


class IncompleteRun(Exception):
    """A stage that finished with failed requests. The message says how many, the last error, and to rerun."""


class EmptyRun(Exception):
    """A stage that finished but produced nothing usable. The message counts why (reject reasons)."""


def failed_requests_line(failures: dict, what: str = "teacher request") -> str:
    """The one line that says a stage left failed requests behind (failures: {"requests": n, "last_error": text})
    and what to do."""
    n, error = failures["requests"], failures["last_error"]
    plural = "s" if n != 1 else ""
    saved = "what was answered is saved: rerun the same command to retry them"
    return f"{n} {what}{plural} failed (last error: {error}); {saved}"
