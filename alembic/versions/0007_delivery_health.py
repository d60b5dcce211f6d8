"""deliveries: the state the conditions give (`health`) stored beside them, so SQL counts
and filters deliveries by state (issue 11); the never-maintained `state` column goes

A delivery's state is derived from its columns (`app.store.delivery_state.state_sql`);
only the part that comes from its conditions, a JSON document, is stored, in `health`,
written with the conditions. Existing rows are filled in from their conditions here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 05:00:00
"""

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _health(conditions: str) -> str:
    """As `app.store.delivery_state.health_of` (kept apart: a migration must not change
    when the application does)."""
    try:
        parsed = orjson.loads(conditions)
    except orjson.JSONDecodeError:
        return ""
    status = {c.get("type"): c.get("status") for c in parsed or [] if isinstance(c, dict)}
    if status.get("Degraded") == "True":
        return "Degraded"
    if status.get("Available") == "True":
        return "Available"
    return ""


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.add_column(sa.Column("health", sa.Text(), nullable=False, server_default=""))
        batch_op.drop_column("state")
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT workload, cluster, conditions FROM deliveries")).all()
    updates = [{"w": w, "c": c, "h": h} for w, c, conditions in rows if (h := _health(conditions))]
    if updates:
        conn.execute(
            sa.text("UPDATE deliveries SET health = :h WHERE workload = :w AND cluster = :c"),
            updates,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(), nullable=False, server_default="Pending")
        )
        batch_op.drop_column("health")
