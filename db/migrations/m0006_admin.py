"""The admin area's tables: the audit log, token revocations and announcements.

`db.audit`, `db.revocations` and `db.announcements` read and write them; the runtime limits
live in `sinal_setting` (m0002), as one JSON object under the name `limits`.
"""

STATEMENTS = (
    # Append-only: nothing in the code updates a row; the purge deletes old ones.
    """
    CREATE TABLE sinal_audit (
        id UUID PRIMARY KEY NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        actor VARCHAR(128) NOT NULL,
        action VARCHAR(64) NOT NULL,
        target VARCHAR(300) NOT NULL,
        params TEXT NOT NULL,
        result TEXT NOT NULL,
        node VARCHAR(128) NOT NULL,
        request_id VARCHAR(128)
    )
    """,
    # The list, newest first, keyset-paginated on (at, id); also the purge's range on `at`.
    "CREATE INDEX sinal_audit_at ON sinal_audit (at DESC, id DESC)",
    # Its filters, each in the list's order.
    "CREATE INDEX sinal_audit_actor ON sinal_audit (actor, at DESC, id DESC)",
    "CREATE INDEX sinal_audit_action ON sinal_audit (action, at DESC, id DESC)",
    "CREATE INDEX sinal_audit_target ON sinal_audit (target, at DESC, id DESC)",
    # One row per user: tokens issued before `revoked_before` are refused until `expires_at`,
    # when every token it covers has expired anyway. (`before` would need quoting everywhere.)
    """
    CREATE TABLE sinal_revocation (
        user_id VARCHAR(128) PRIMARY KEY NOT NULL,
        revoked_before TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        created TIMESTAMPTZ NOT NULL,
        by_user VARCHAR(128) NOT NULL
    )
    """,
    "CREATE INDEX sinal_revocation_expires ON sinal_revocation (expires_at)",
    """
    CREATE TABLE sinal_announcement (
        id UUID PRIMARY KEY NOT NULL,
        title VARCHAR(512) NOT NULL,
        body VARCHAR(8192) NOT NULL DEFAULT '',
        severity VARCHAR(16) NOT NULL
            CHECK (severity IN ('info', 'success', 'warning', 'error')),
        link VARCHAR(2048),
        created TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ,
        by_user VARCHAR(128) NOT NULL
    )
    """,
    # Active ones, newest first: few rows live at a time, the expiry is a filter on this order.
    "CREATE INDEX sinal_announcement_created ON sinal_announcement (created DESC, id DESC)",
    """
    CREATE INDEX sinal_announcement_expires ON sinal_announcement (expires_at)
    WHERE expires_at IS NOT NULL
    """,
)
