"""announcement drafts on guided flows: the announcementdraft table goes

/announce keeps its draft in a guided flow (table `flow`, kind "ann") like every other feature.
Drafts open at the upgrade are dropped: a lead with one open starts /announce again.

Revision ID: a7c3e9d41b20
Revises: 7a1c3e9d2b54
Create Date: 2026-12-01 03:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import models.base

revision: str = "a7c3e9d41b20"
down_revision: str | Sequence[str] | None = "7a1c3e9d2b54"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("announcementdraft")


def downgrade() -> None:
    op.create_table(
        "announcementdraft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=True),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("subtree", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("photo", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("send_now", sa.Boolean(), nullable=False),
        sa.Column("start", models.base.UTCDateTime(), nullable=True),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("days", sa.JSON(), nullable=False),
        sa.Column("pin", sa.Boolean(), nullable=False),
        sa.Column("silent", sa.Boolean(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["community.id"],
            name=op.f("fk_announcementdraft_community_id_community"),
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["unit.id"], name=op.f("fk_announcementdraft_unit_id_unit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_announcementdraft")),
        sa.UniqueConstraint("person_id", name=op.f("uq_announcementdraft_person_id")),
        sqlite_autoincrement=True,
    )
