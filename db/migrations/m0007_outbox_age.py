"""When each outbox row was written, so `/metrics` and the alerts can tell the age of a backlog.

A default fills it, so the statements that write the outbox stay as they are. SQLite cannot add a
column whose default is not a constant: the table is rebuilt with it, ids kept (the relay's
deduplication sequence continues from them).
"""

SQLITE = (
    """
    CREATE TABLE sinal_outbox_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel VARCHAR(256) NOT NULL,
        type VARCHAR(128) NOT NULL,
        data TEXT NOT NULL,
        created_ms INTEGER NOT NULL
            DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
    )
    """,
    "INSERT INTO sinal_outbox_new (id, channel, type, data) SELECT id, channel, type, data "
    "FROM sinal_outbox",
    # Keep AUTOINCREMENT's high-water mark, which may be above every id still present.
    """
    UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM sqlite_sequence
                                              WHERE name = 'sinal_outbox'))
    WHERE name = 'sinal_outbox_new'
    """,
    "DROP TABLE sinal_outbox",
    "ALTER TABLE sinal_outbox_new RENAME TO sinal_outbox",
)
POSTGRESQL = (
    "ALTER TABLE sinal_outbox ADD COLUMN created_ms BIGINT NOT NULL "
    "DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
)
STATEMENTS = {"sqlite": SQLITE, "postgresql": POSTGRESQL}
