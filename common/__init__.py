"""The shared layer below the stages: errors, models, I/O, the stage contract, config loading, graders, the cached teacher. Imports only `schemas`."""
