"""Executions, their steps and their log lines (`db.executions`)."""

STATEMENTS = (
    """
    CREATE TABLE execution (
        id UUID PRIMARY KEY NOT NULL,
        team VARCHAR(128) NOT NULL,
        owner VARCHAR(128) NOT NULL,
        name VARCHAR(256) NOT NULL,
        kind VARCHAR(128) NOT NULL DEFAULT '',
        status VARCHAR(16) NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        progress INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
        step INTEGER,
        step_name VARCHAR(256),
        total_steps INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1,
        retry_of UUID,
        error_code VARCHAR(128),
        error_message VARCHAR(4096),
        error_step INTEGER,
        error_details JSON,
        created TIMESTAMPTZ NOT NULL,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        updated TIMESTAMPTZ NOT NULL,
        next_seq BIGINT NOT NULL DEFAULT 1
    )
    """,
    # Lists: a team's executions newest first, optionally by status; an owner's.
    "CREATE INDEX execution_team_created ON execution (team, created DESC, id DESC)",
    "CREATE INDEX execution_team_status ON execution (team, status, created DESC, id DESC)",
    "CREATE INDEX execution_owner_created ON execution (owner, created DESC, id DESC)",
    """
    CREATE TABLE execution_step (
        execution_id UUID NOT NULL,
        number INTEGER NOT NULL,
        name VARCHAR(256) NOT NULL,
        status VARCHAR(16) NOT NULL
            CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        PRIMARY KEY (execution_id, number)
    )
    """,
    """
    CREATE TABLE execution_log (
        execution_id UUID NOT NULL,
        seq BIGINT NOT NULL,
        time TIMESTAMPTZ NOT NULL,
        level VARCHAR(16) NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
        step INTEGER,
        message TEXT NOT NULL,
        data JSON NOT NULL DEFAULT '{}',
        PRIMARY KEY (execution_id, seq)
    )
    """,
    # Log filters: by level and by step, in order.
    "CREATE INDEX execution_log_level ON execution_log (execution_id, level, seq)",
    "CREATE INDEX execution_log_step ON execution_log (execution_id, step, seq)",
)
