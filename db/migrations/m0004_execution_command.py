"""Retry and cancel commands sent to the execution service (`db.tracking`); the list of
every team's executions."""

STATEMENTS = (
    """
    CREATE TABLE execution_command (
        id UUID PRIMARY KEY NOT NULL,
        execution_id UUID NOT NULL,
        command VARCHAR(16) NOT NULL CHECK (command IN ('retry', 'cancel')),
        by_user VARCHAR(128) NOT NULL,
        retry_execution UUID,
        created TIMESTAMPTZ NOT NULL
    )
    """,
    "CREATE INDEX execution_command_execution ON execution_command (execution_id, created)",
    # An admin's list of every team's executions, newest first.
    "CREATE INDEX execution_created ON execution (created DESC, id DESC)",
)
