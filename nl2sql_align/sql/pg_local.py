"""A throwaway local PostgreSQL cluster: initdb + pg_ctl in a temporary folder, listening on a unix socket there
only (never TCP), deleted when the context ends. The test suite and the BIRD-scale benchmark use it; a user who
wants to try `data.postgres` without a server of their own can too:

    with local_cluster() as c:
        copy_database("shop.sqlite", c.dsn("shop"), reader="nl2sql_reader")
        ...  # c.template("nl2sql_reader") is a `data.postgres` value

initdb refuses to run as root, so as root the cluster runs as the `postgres` OS user (the Debian package creates
it) through runuser. Durability is off (fsync, synchronous_commit, full_page_writes): the data lives as long as
the context and speed matters more.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why (callers skip or report it)."""


def pg_bin() -> Path | None:
    """The folder of pg_ctl/initdb: on PATH, else the newest /usr/lib/postgresql/N/bin (Debian keeps them there)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _as_user() -> tuple[list[str], tuple[int, int] | None]:
    """(command prefix, (uid, gid) to own the folder) for running initdb/pg_ctl: root cannot."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable("running as root and there is no 'postgres' OS user to run initdb as") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("running as root and runuser is missing")
    return [runuser, "-u", "postgres", "--"], (pw.pw_uid, pw.pw_gid)


@dataclass
class LocalCluster:
    root: Path
    bin: Path
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, db: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@/{db}?host={self.root}"

    def template(self, user: str) -> str:
        """A `data.postgres` value: one database per db_id, logged in as `user`."""
        return f"postgresql://{user}@/{{db_id}}?host={self.root}"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def admin(self, db: str):
        """An autocommit superuser connection (setup and checks only, never the sandbox)."""
        import psycopg

        return psycopg.connect(self.dsn(db), autocommit=True)


@contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """Start a cluster, yield it, stop it (immediate) and delete its folder. Raises ClusterUnavailable when
    PostgreSQL's binaries are missing or the server does not start."""
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise ClusterUnavailable("PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql)")
    prefix, owner = _as_user()
    root = Path(tempfile.mkdtemp(prefix="nl2sql-pg-"))
    if owner:
        os.chown(root, *owner)
    os.chmod(root, 0o700)
    c = LocalCluster(root, bin_dir, prefix)
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(c.data), "-U", "postgres", "-A", "trust", "--no-sync"]
            + ["-E", "UTF8", "--locale=C"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{root}' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=60"
        )
        c.pg_ctl("-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(root, ignore_errors=True)
        raise ClusterUnavailable(
            f"could not start a throwaway PostgreSQL cluster: {getattr(e, 'stderr', b'')!r}"
        ) from e
    try:
        yield c
    finally:
        try:
            c.pg_ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)
