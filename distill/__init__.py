"""distill: documents -> teacher-written QA with reasoning traces -> fine-tuned student -> evaluation."""

__version__ = "0.1.0"
