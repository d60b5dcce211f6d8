"""cluster identity: registrations, issued certificates, removals (issue 9)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_registrations",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.Column("auto", sa.Boolean(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_expires_at", sa.Float(), nullable=False),
        sa.Column("token_used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "cluster_certificates",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("cluster", sa.String(length=63), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("not_after", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("serial"),
    )
    op.create_index("ix_cluster_certificates_cluster", "cluster_certificates", ["cluster"])
    op.create_table(
        "cluster_removals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("cluster", sa.String(length=63), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("keep_inventory", sa.Boolean(), nullable=False),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("cluster_removals")
    op.drop_index("ix_cluster_certificates_cluster", table_name="cluster_certificates")
    op.drop_table("cluster_certificates")
    op.drop_table("cluster_registrations")
