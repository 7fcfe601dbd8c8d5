"""task series: the date of the first occurrence

Revision ID: 7a1c3e9d2b54
Revises: f4ab8ceebb54
Create Date: 2026-12-01 03:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a1c3e9d2b54"
down_revision: str | Sequence[str] | None = "f4ab8ceebb54"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task_series") as batch:
        batch.add_column(sa.Column("starts_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_series") as batch:
        batch.drop_column("starts_on")
