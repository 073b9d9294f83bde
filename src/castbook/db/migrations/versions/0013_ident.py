"""A per-owner change counter for the identity search's in-memory index.

Every insert, delete or move of an owner's reference images (a new one waits to be
indexed; a reordered one changes positions) and of their stored identity vectors bumps
``identity_revisions.revision`` for that owner, in the same transaction, by a trigger: any
writer, the database's own cascades included, keeps it. A search then asks for one row by
its primary key to know whether the index it holds is current, instead of counting the
owner's vectors and looking for unindexed images every time.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BUMP_SQLITE = """
    INSERT INTO identity_revisions (owner, revision) {source}
    ON CONFLICT (owner) DO UPDATE SET revision = revision + 1;
"""
# SQLite reads "INSERT … SELECT … ON CONFLICT" only when the SELECT has a WHERE clause.
_OWNER_OF_IMAGE = "SELECT owner, 1 FROM characters WHERE id = {row}.character_id"

_SQLITE_TRIGGERS = {
    "identity_revision_vectors_insert": (
        "AFTER INSERT ON identity_vectors",
        "VALUES (NEW.owner, 1)",
    ),
    "identity_revision_vectors_update": (
        "AFTER UPDATE ON identity_vectors",
        "VALUES (NEW.owner, 1)",
    ),
    "identity_revision_vectors_delete": (
        "AFTER DELETE ON identity_vectors",
        "VALUES (OLD.owner, 1)",
    ),
    "identity_revision_images_insert": (
        "AFTER INSERT ON reference_images",
        _OWNER_OF_IMAGE.format(row="NEW"),
    ),
    "identity_revision_images_update": (
        "AFTER UPDATE OF character_id, position, sha256 ON reference_images",
        _OWNER_OF_IMAGE.format(row="NEW"),
    ),
    # During a character's own deletion its row may be gone already: its vectors' deletion
    # (cascaded) bumps the counter then.
    "identity_revision_images_delete": (
        "AFTER DELETE ON reference_images",
        _OWNER_OF_IMAGE.format(row="OLD"),
    ),
}

_POSTGRES = [
    """
CREATE FUNCTION identity_revision_bump(owner_name text) RETURNS void AS $$
BEGIN
    IF owner_name IS NOT NULL THEN
        INSERT INTO identity_revisions (owner, revision) VALUES (owner_name, 1)
        ON CONFLICT (owner) DO UPDATE SET revision = identity_revisions.revision + 1;
    END IF;
END $$ LANGUAGE plpgsql
""",
    """
CREATE FUNCTION identity_revision_of_vectors() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM identity_revision_bump(OLD.owner);
    ELSE
        PERFORM identity_revision_bump(NEW.owner);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql
""",
    """
CREATE FUNCTION identity_revision_of_images() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM identity_revision_bump(
            (SELECT owner FROM characters WHERE id = OLD.character_id));
    ELSE
        PERFORM identity_revision_bump(
            (SELECT owner FROM characters WHERE id = NEW.character_id));
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER identity_revision_vectors
    AFTER INSERT OR UPDATE OR DELETE ON identity_vectors
    FOR EACH ROW EXECUTE FUNCTION identity_revision_of_vectors()
""",
    """
CREATE TRIGGER identity_revision_images
    AFTER INSERT OR DELETE OR UPDATE OF character_id, position, sha256 ON reference_images
    FOR EACH ROW EXECUTE FUNCTION identity_revision_of_images()
""",
]


def upgrade() -> None:
    op.create_table(
        "identity_revisions",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for statement in _POSTGRES:
            op.execute(statement)
        return
    for name, (event, source) in _SQLITE_TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {event} FOR EACH ROW BEGIN"
            f"{_BUMP_SQLITE.format(source=source)}END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER identity_revision_images ON reference_images")
        op.execute("DROP TRIGGER identity_revision_vectors ON identity_vectors")
        op.execute("DROP FUNCTION identity_revision_of_images()")
        op.execute("DROP FUNCTION identity_revision_of_vectors()")
        op.execute("DROP FUNCTION identity_revision_bump(text)")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("identity_revisions")
