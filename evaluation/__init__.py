"""The evaluation stage: the student against its base and the teacher on held-out questions (`distill eval`)."""
