"""bodies as JSON text, created and prev_labels columns, the rejections table

Bodies, manifests and workload status become JSON kept as text: PostgreSQL's jsonb refuses
U+0000, which Kubernetes objects may hold (issue 7). SQLite already stores JSON as text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_COLUMNS = (
    ("resources", "body"),
    ("changes", "body"),
    ("workloads", "manifests"),
    ("deliveries", "conditions"),
    ("deliveries", "feedback"),
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("resources") as batch_op:
        batch_op.add_column(sa.Column("created", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("changes") as batch_op:
        batch_op.add_column(sa.Column("prev_labels", sa.Text(), nullable=True))
    if postgres:
        op.execute(
            "UPDATE resources SET created = "
            "coalesce(body -> 'metadata' ->> 'creationTimestamp', '')"
        )
        for table, column in TEXT_COLUMNS:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE text USING {column}::text")
    else:
        op.execute(
            "UPDATE resources SET created = "
            "coalesce(json_extract(body, '$.metadata.creationTimestamp'), '')"
        )
    op.create_table(
        "rejections",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("cluster", sa.String(length=253), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rejections_cluster", "rejections", ["cluster", "id"])


def downgrade() -> None:
    op.drop_index("ix_rejections_cluster", table_name="rejections")
    op.drop_table("rejections")
    if op.get_bind().dialect.name == "postgresql":
        for table, column in TEXT_COLUMNS:
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE jsonb USING {column}::jsonb"
            )
    with op.batch_alter_table("changes") as batch_op:
        batch_op.drop_column("prev_labels")
    with op.batch_alter_table("resources") as batch_op:
        batch_op.drop_column("created")
