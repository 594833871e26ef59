"""The decision database's schema, migrated forward by itself at start-up.

``schema_version`` holds the version the tables were last migrated to. At
start-up the migrations after it run in one transaction (PostgreSQL: under
an advisory lock, so that replicas starting together migrate once). A
database whose version is newer than this code knows is refused with both
versions named: an older gateway never writes into tables it does not
understand. The same statements serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

from pullguard.gateway.decisions import notifications
from pullguard.gateway.decisions.database import POSTGRESQL, Connection, StateError

#: Version 1: the tables as they were before versions were recorded.
TABLES = (
    """CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    reference TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    decision TEXT NOT NULL,
    denied_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    transient INTEGER NOT NULL,
    report TEXT NOT NULL,
    outage TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time)",
    "CREATE INDEX IF NOT EXISTS decisions_repository ON decisions(repository, time)",
    """CREATE TABLE IF NOT EXISTS admitted (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (repository, digest, policy_version)
)""",
    """CREATE TABLE IF NOT EXISTS admitted_blobs (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
)""",
    """CREATE TABLE IF NOT EXISTS manifest_blobs (
    repository TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    PRIMARY KEY (repository, manifest_digest, blob_digest)
)""",
    """CREATE TABLE IF NOT EXISTS index_entries (
    repository TEXT NOT NULL,
    index_digest TEXT NOT NULL,
    child_digest TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (repository, index_digest, child_digest, policy_version)
)""",
    """CREATE TABLE IF NOT EXISTS names (
    client_name TEXT PRIMARY KEY,
    repository TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS waivers (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    code TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    quarantine_id TEXT NOT NULL,
    time TEXT NOT NULL,
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    PRIMARY KEY (repository, digest, code)
)""",
    """CREATE TABLE IF NOT EXISTS published (
    target TEXT NOT NULL,
    repository TEXT NOT NULL,
    reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (target, repository, reference)
)""",
    "CREATE TABLE IF NOT EXISTS audit_pending (id TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL
)""",
)


def _version_1(db: Connection) -> None:
    for statement in TABLES:
        db.execute(statement)
    # SQLite files made before outages were recorded lack the column (empty: a verdict).
    if "outage" not in db.columns("decisions"):
        db.execute("ALTER TABLE decisions ADD COLUMN outage TEXT NOT NULL DEFAULT ''")


#: Version 3: the console pages decisions by keyset, newest first: one index
#: per filter, each ending in (time, id) so that a page is one range scan;
#: they replace the single-column time indexes. And re-evaluation runs.
CONSOLE = (
    "CREATE INDEX IF NOT EXISTS decisions_page ON decisions(time, id)",
    "CREATE INDEX IF NOT EXISTS decisions_outcome_page ON decisions(decision, time, id)",
    "CREATE INDEX IF NOT EXISTS decisions_repository_page ON decisions(repository, time, id)",
    "CREATE INDEX IF NOT EXISTS decisions_layer_page ON decisions(denied_by, time, id)",
    "DROP INDEX IF EXISTS decisions_time",
    "DROP INDEX IF EXISTS decisions_repository",
    """CREATE TABLE IF NOT EXISTS reevaluation_runs (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    operator TEXT NOT NULL,
    force INTEGER NOT NULL,
    images TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS reevaluation_runs_page ON reevaluation_runs(time, id)",
)


def _version_3(db: Connection) -> None:
    for statement in CONSOLE:
        db.execute(statement)


#: Migration N brings a database from version N-1 to N; append, never edit.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _version_1,
    # Version 2: the notification queue.
    notifications.create_tables,
    # Version 3: the console's keyset indexes and re-evaluation runs.
    _version_3,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: pg_advisory_xact_lock key of the migration ("pullguard schema").
MIGRATION_LOCK = 0x7067_7363_6865_6D61


def migrate(db: Connection, refuse_fresh: str | None = None) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the version it had.

    ``refuse_fresh``: the error to raise, touching nothing, when the database
    holds no schema yet (its records are lost, see the package doc).
    """
    db.begin()
    try:
        if db.dialect == POSTGRESQL:
            db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = int(row[0]) if row and row[0] is not None else 0
        if found > SCHEMA_VERSION:
            raise StateError(
                f"{db.name} holds schema version {found}, newer than the {SCHEMA_VERSION}"
                " this pullguard knows: run the pullguard that migrated it (or a newer one)"
            )
        if found == 0 and refuse_fresh is not None:
            raise StateError(refuse_fresh)
        for migration in MIGRATIONS[found:]:
            migration(db)
        if found < SCHEMA_VERSION:
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return found
