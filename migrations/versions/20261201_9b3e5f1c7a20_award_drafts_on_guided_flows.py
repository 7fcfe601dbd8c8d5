"""award drafts on guided flows: the awarddraft table goes

Award, deduction and correction drafts are `flow` rows of kind "award" now (models/points.py
AwardDraft is a view of one). An open draft of the old table is dropped with it: a lead who was
half-way through an award starts it again (drafts expire after an hour anyway).

Revision ID: 9b3e5f1c7a20
Revises: a7c3e9d41b20
Create Date: 2026-12-01 04:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import models.base

revision: str = "9b3e5f1c7a20"
down_revision: str | Sequence[str] | None = "a7c3e9d41b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("awarddraft", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_awarddraft_lead_id"))
    op.drop_table("awarddraft")


def downgrade() -> None:
    op.create_table(
        "awarddraft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("person_ids", sa.JSON(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=True),
        sa.Column("rule_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"], ["community.id"], name=op.f("fk_awarddraft_community_id_community")
        ),
        sa.ForeignKeyConstraint(["unit_id"], ["unit.id"], name=op.f("fk_awarddraft_unit_id_unit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_awarddraft")),
    )
    with op.batch_alter_table("awarddraft", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_awarddraft_lead_id"), ["lead_id"], unique=False)
