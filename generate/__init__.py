"""Documents -> chunks -> teacher requests -> validated, curated QA records (`distill gen`)."""
