"""The transactional outbox, per-user idempotency keys and the purge's index on expiry."""

# The outbox id orders events and is the relay's deduplication sequence, so it must never be
# reused: SQLite without AUTOINCREMENT hands out a deleted maximum id again.
SQLITE = (
    """
    CREATE TABLE sinal_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel VARCHAR(256) NOT NULL,
        type VARCHAR(128) NOT NULL,
        data TEXT NOT NULL
    )
    """,
)
POSTGRESQL = (
    """
    CREATE TABLE sinal_outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel VARCHAR(256) NOT NULL,
        type VARCHAR(128) NOT NULL,
        data TEXT NOT NULL
    )
    """,
)
COMMON = (
    # Values the service keeps for itself (the outbox's identity, see db.outbox).
    "CREATE TABLE sinal_setting (name VARCHAR(64) PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
    # One key may create one notification per user: a producer retrying a create for many
    # users sends the same key again.
    "DROP INDEX notification_idempotency",
    """
    CREATE UNIQUE INDEX notification_idempotency
    ON notification (producer, idempotency_key, user_id)
    WHERE idempotency_key IS NOT NULL
    """,
    "CREATE INDEX notification_expires ON notification (expires_at) WHERE expires_at IS NOT NULL",
)
STATEMENTS = {"sqlite": SQLITE + COMMON, "postgresql": POSTGRESQL + COMMON}
