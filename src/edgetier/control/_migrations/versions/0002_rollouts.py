"""Rollouts: each deployment's newest rollout (state, batches, the nodes updated so far,
what runs before and after).

Portable types only, as 0001, so the same migration builds SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("deployment", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("from_revision", sa.Integer(), nullable=False),
        sa.Column("to_revision", sa.Integer(), nullable=False),
        sa.Column("from_workload", sa.JSON(), nullable=False),
        sa.Column("to_workload", sa.JSON(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("updated", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("batch_started_at", sa.DateTime(), nullable=False),
        sa.Column("converged_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment"),
    )


def downgrade() -> None:
    op.drop_table("rollouts")
