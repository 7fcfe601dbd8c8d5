"""constraint naming convention, unique unit names among siblings, handled updates

Revision ID: 5c0e1d2a9b7f
Revises: 22b44b71af6d
Create Date: 2026-12-01 00:40:00+00:00

Databases made before the naming convention have PostgreSQL's default names (`unit_pkey`,
`community_name_key`, `household_building_id_fkey`): they are renamed to the convention's
(`pk_unit`, `uq_community_name`, `fk_household_building_id_unit`) so later revisions can name
them on every database. SQLite keeps its unnamed constraints (batch mode copies tables by
reflection, names are not needed there).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c0e1d2a9b7f"
down_revision: str | Sequence[str] | None = "22b44b71af6d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONSTRAINTS = sa.text(
    """
    SELECT t.relname AS table_name, c.conname AS name, c.contype::text AS kind,
           r.relname AS referred,
           array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(num, pos)
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
                 ORDER BY k.pos) AS columns
    FROM pg_constraint c
    JOIN pg_class t ON t.oid = c.conrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    LEFT JOIN pg_class r ON r.oid = c.confrelid
    WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')
      AND t.relname <> 'alembic_version'
    """
)


def postgres_default(table: str, kind: str, columns: list[str]) -> str:
    """The name PostgreSQL gives an unnamed constraint."""
    joined = "_".join(columns)
    return {"p": f"{table}_pkey", "u": f"{table}_{joined}_key", "f": f"{table}_{joined}_fkey"}[kind]


def conventional(table: str, kind: str, columns: list[str], referred: str | None) -> str:
    """The name models.base.NAMING_CONVENTION gives it."""
    joined = "_".join(columns)
    return {
        "p": f"pk_{table}",
        "u": f"uq_{table}_{joined}",
        "f": f"fk_{table}_{joined}_{referred}",
    }[kind]


def _rename_to_convention() -> None:
    # Only names PostgreSQL made up: a constraint someone named stays as named.
    for row in op.get_bind().execute(_CONSTRAINTS).mappings().all():
        table, kind, columns = row["table_name"], row["kind"], list(row["columns"])
        name = conventional(table, kind, columns, row["referred"])
        if row["name"] == postgres_default(table, kind, columns) and len(name) <= 63:
            op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{row["name"]}" TO "{name}"')


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rename_to_convention()
    op.create_table(
        "handledupdate",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("update_id", name=op.f("pk_handledupdate")),
    )
    with op.batch_alter_table("unit", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_unit_community_id_parent_id_name"),
            ["community_id", "parent_id", "name"],
            postgresql_nulls_not_distinct=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("unit", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_unit_community_id_parent_id_name"), type_="unique")
    op.drop_table("handledupdate")
