"""``lianfang backup``: a consistent copy of the journal while the gateway writes it.

A journal in WAL mode is three files, and committed events may still be in the
``-wal`` file only: ``cp journal.sqlite3`` while the gateway runs can copy a
database without its newest alarms, or a torn one. SQLite's online backup copies
one consistent snapshot through SQLite itself, and never blocks the writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class BackupError(Exception):
    """Why the journal could not be backed up: one line for the installer."""


def backup_journal(journal: Path, dest: Path) -> int:
    """Copy ``journal`` to ``dest`` (replacing it atomically); return the events it holds.

    Raises:
        BackupError: when there is no journal, or the copy fails or is damaged.
    """
    if not journal.is_file():
        raise BackupError(f"no journal at {journal}: has the gateway run with this config?")
    if dest.is_dir():
        raise BackupError(f"{dest} is a folder; name the backup file, e.g. {dest}/journal.db")
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        # mode=rw: never create an empty journal where a path was mistyped.
        source = sqlite3.connect(f"file:{journal}?mode=rw", uri=True)
        try:
            source.execute("PRAGMA busy_timeout=5000")
            copy = sqlite3.connect(tmp)
            try:
                source.backup(copy)
                # The copy stands alone: one file, no -wal beside it to lose.
                copy.execute("PRAGMA journal_mode=DELETE")
                verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
                events: int = copy.execute("SELECT count(*) FROM events").fetchone()[0]
            finally:
                copy.close()
        finally:
            source.close()
        if verdict != "ok":
            raise BackupError(f"the copy of {journal} fails SQLite's check: {verdict}")
        # Events name shops and their phones: the copy is for its owner only.
        tmp.chmod(0o600)
        tmp.replace(dest)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {journal}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return events
