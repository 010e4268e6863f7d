"""The notification table and the indexes behind every query in `db.notifications`."""

# Column types are those Piccolo declares (UUID, TIMESTAMPTZ, JSON) so that its SQLite
# converters turn them back into UUID, aware datetime and JSON text.
STATEMENTS = (
    """
    CREATE TABLE notification (
        id UUID PRIMARY KEY NOT NULL,
        user_id VARCHAR(128) NOT NULL,
        type VARCHAR(128) NOT NULL,
        title VARCHAR(512) NOT NULL,
        body VARCHAR(8192) NOT NULL DEFAULT '',
        data JSON NOT NULL DEFAULT '{}',
        severity VARCHAR(16) NOT NULL DEFAULT 'info'
            CHECK (severity IN ('info', 'success', 'warning', 'error')),
        link VARCHAR(2048),
        created TIMESTAMPTZ NOT NULL,
        read_at TIMESTAMPTZ,
        dismissed_at TIMESTAMPTZ,
        expires_at TIMESTAMPTZ,
        producer VARCHAR(128),
        idempotency_key VARCHAR(255),
        CHECK ((producer IS NULL) = (idempotency_key IS NULL))
    )
    """,
    # History, newest first, keyset-paginated on (created, id).
    "CREATE INDEX notification_user_created ON notification (user_id, created DESC, id DESC)",
    # Unread count and the unread list: only unread rows are in it, so it stays small however
    # long a user's history grows.
    """
    CREATE INDEX notification_user_unread ON notification (user_id, created DESC, id DESC)
    WHERE read_at IS NULL AND dismissed_at IS NULL
    """,
    "CREATE INDEX notification_user_type ON notification (user_id, type, created DESC, id DESC)",
    # Idempotent creates: one row per (producer, key); rows without a key are not in it.
    """
    CREATE UNIQUE INDEX notification_idempotency ON notification (producer, idempotency_key)
    WHERE idempotency_key IS NOT NULL
    """,
)
