"""Schema migrations, applied in file-name order by `db.migrate.migrate`.

Each module defines `STATEMENTS`: SQL that runs unchanged on SQLite and PostgreSQL, or a dict of
statements per dialect (`sqlite`, `postgresql`) where they differ; all of a migration runs in one
transaction. A module's name is its id; never rename or edit an applied one.
"""
