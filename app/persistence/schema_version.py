"""Is the database at the schema this code expects? A start-up question answered without Alembic.

The serving process needs Alembic, SQLAlchemy and SQLModel only to migrate; on a database that
is already at the head revision (every start but the first after an upgrade) they would only
cost start-up time and memory. The head is read from the revision files themselves, and the
database's revision from `alembic_version` with asyncpg; when they differ (or the table is
missing: a new database, or the Kotlin service's), start-up runs the real migration, under its
lock, which decides again. A unit test keeps `head_revision()` equal to Alembic's own answer.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import asyncpg

VERSIONS_DIR = Path(__file__).resolve().parent / "migrations" / "versions"
_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


@cache
def head_revision() -> str:
    """The one revision no other revision builds on."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS_DIR.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = _REVISION.search(text)
        if revision is None:
            continue
        revisions.add(revision.group(1))
        down = _DOWN_REVISION.search(text)
        if down is not None and down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def at_head(dsn: str) -> bool:
    """True when the database's `alembic_version` is the head revision (nothing to migrate)."""
    connection = await asyncpg.connect(dsn)
    try:
        if await connection.fetchval("SELECT to_regclass('alembic_version') IS NULL"):
            return False
        versions = [row[0] for row in await connection.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await connection.close()
    return versions == [head_revision()]
