# tests/pg.py - a private PostgreSQL server for the tests: initdb in a
# temporary directory, listening on a unix socket only (no TCP port, nothing
# shared with the machine's own clusters), stopped at the end of the session.
# PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user the Debian package creates.  Each test gets a database of its
# own (fresh_url), so registries never see one another.
"""A throwaway PostgreSQL server for the registry's shared-database tests."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

PORT = 5433  # only names the socket file (.s.PGSQL.5433) in our own directory


def _bindir() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    postgres = shutil.which("postgres")
    if postgres:
        return Path(postgres).parent
    raise RuntimeError("PostgreSQL is not installed (tools/test-all installs Debian's postgresql)")


class PgServer:
    """A running private server; ``admin_url`` connects as its superuser."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="netstore-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._names = itertools.count(1)
        self._bin = _bindir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.dir / "log"),
                  "-o", f"-k {self.dir} -c listen_addresses= -p {PORT} -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                  "start")

    def _run(self, prog: str, *args: str) -> None:
        argv = [str(self._bin / prog), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError(f"{prog} failed ({r.returncode}): {r.stderr or r.stdout}")

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{dbname}?host={self.dir}&port={PORT}"

    @property
    def admin_url(self) -> str:
        return self.url()

    def fresh_url(self) -> str:
        """A new empty database's URL."""
        return self.url(self.fresh_db())

    def fresh_db(self) -> str:
        """A new empty database's name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return name

    def sql(self, statement: str) -> None:
        """Run `statement` as the server's superuser."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
