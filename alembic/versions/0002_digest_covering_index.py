"""digest covering index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 05:08:18.565305
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["cluster", "api_version", "kind", "deleted", "uid", "resource_version"]


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index("ix_resources_digest", COLUMNS, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index("ix_resources_digest")
