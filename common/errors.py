"""The exceptions the CLI turns into one line and an exit code:

- `UserError`: bad input from the user; exit 2.
- `IncompleteRun`: a stage finished but left work undone (teacher requests that failed); its
  outputs are saved and a rerun retries only what failed; exit 3 (`EXIT_INCOMPLETE`).
"""

EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3


class UserError(Exception):
    """Bad input from the user. The message states the rule, the offending value and the fix."""


class IncompleteRun(Exception):
    """A stage that finished with failed requests. The message says how many, the last error, and to rerun."""
