"""The in-app alerts' state, shared by every node, and the administrators they go to.

`db.alerts` reads and writes them: one row per alert, whose change of state is a
compare-and-set (so two nodes evaluating at once make one transition, not two); the nodes that
currently see a condition they evaluate for themselves (the engine being down); and the
administrators seen on the admin API, who receive the alerts as notifications.
"""

STATEMENTS = (
    # `since`: when the condition began to hold (its firing time, not its pending start).
    # `resolved_at`: when it last resolved, NULL while it fires. `updated`: the last write of
    # its summary and values, which change while it fires.
    """
    CREATE TABLE sinal_alert (
        name VARCHAR(64) PRIMARY KEY NOT NULL,
        state VARCHAR(16) NOT NULL CHECK (state IN ('firing', 'resolved')),
        severity VARCHAR(16) NOT NULL,
        since TIMESTAMPTZ NOT NULL,
        resolved_at TIMESTAMPTZ,
        updated TIMESTAMPTZ NOT NULL,
        summary VARCHAR(1024) NOT NULL,
        alert_values TEXT NOT NULL,
        node VARCHAR(128) NOT NULL
    )
    """,
    # One row per (alert, node) while that node sees the condition; `reported` is refreshed
    # at each of its evaluations, so a node that died holding one stops counting.
    """
    CREATE TABLE sinal_alert_source (
        alert VARCHAR(64) NOT NULL,
        node VARCHAR(128) NOT NULL,
        reported TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (alert, node)
    )
    """,
    # Sinal has no user table: an administrator is recorded when the admin API first sees them
    # in a process, and `last_seen` moves on at most once per process.
    """
    CREATE TABLE sinal_admin (
        user_id VARCHAR(128) PRIMARY KEY NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL
    )
    """,
    "CREATE INDEX sinal_admin_last_seen ON sinal_admin (last_seen)",
)
