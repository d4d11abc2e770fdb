"""distill: documents -> teacher-written QA with reasoning traces -> fine-tuned student -> evaluation."""

import os

# Before torch loads its OpenMP runtime: threads that wait at the end of a parallel region sleep instead of
# spinning. With the default (spin), a 2-core CPU that has anything else running (a browser, a test
# runner, another distill stage) stalls every small matrix product on the descheduled thread: a batch-4
# decode step of the 135M teacher took 1.6-6.5 s instead of 0.11-0.32 s, a 4x576x1536 product 13-29 ms
# instead of 0.44 ms (docs/benchmarks.md, "OpenMP's wait policy"). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
