"""A retry's lookup of the attempt that already retries an execution (`db.executions.retry`)."""

STATEMENTS = ("CREATE INDEX execution_retry_of ON execution (retry_of)",)
