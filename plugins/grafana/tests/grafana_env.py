"""Shared by the grafana plugin's tests: packages of the stand-in Grafana (grafana_standin.py: no
real Grafana server exists on these machines), a data directory owned by an unprivileged user
with a database migrated by the stand-in of one release and filled like a deployment's, its
digest read independently of the plugin, and manifests.

A package is laid out as nixpkgs builds Grafana: `bin/grafana` (here: the stand-in of one release
run by a Python the server user may run) and `share/grafana/conf/defaults.ini`.

`make_database` builds the schema the way Grafana does (the release's migrator on an empty
database, from the published migrations in grafana_migrations.py) and fills it like a real
deployment: three organisations with unicode names, users of several roles (disabled ones,
service accounts), teams and members, nested folders, dashboards with big panel JSON and their
version history, one dashboard of 2 MiB, tags, stars, preferences, data sources with encrypted
secure_json_data, API keys, annotations (region and point, on and off dashboards) and alert
rules with labels and annotations.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import random
import site
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_standin import DEFAULTS_INI, RELEASES, prefix_script

from nixos_migrate.testing import provision
from nixos_migrate.testing.manifests import ServiceRig

ALL = tuple(RELEASES)
TESTS = Path(__file__).resolve().parent

#: the columns every release has, per table: what the digest compares across versions
COLUMNS = {
    "user": ("id", "login", "email", "name", "password", "salt", "org_id", "is_admin", "is_disabled",
             "is_service_account", "help_flags1", "created"),
    "org": ("id", "name", "created"),
    "org_user": ("org_id", "user_id", "role"),
    "team": ("id", "org_id", "name", "email"),
    "team_member": ("team_id", "user_id", "permission"),
    "dashboard": ("id", "org_id", "uid", "slug", "title", "data", "folder_id", "is_folder", "version", "created_by"),
    "dashboard_tag": ("dashboard_id", "term"),
    "dashboard_version": ("dashboard_id", "version", "parent_version", "message", "data"),
    "data_source": ("id", "org_id", "uid", "type", "name", "url", "json_data", "secure_json_data", "is_default"),
    "api_key": ("id", "org_id", "name", "key", "role", "expires"),
    "preferences": ("org_id", "user_id", "team_id", "theme", "timezone", "week_start", "json_data"),
    "star": ("user_id", "dashboard_id"),
    "annotation": ("id", "org_id", "dashboard_id", "panel_id", "text", "epoch", "epoch_end", "data"),
    "alert_rule": ("uid", "org_id", "title", "condition", "data", "for", "labels", "annotations", "rule_group"),
}  # fmt: skip


def package(version: str) -> Path:
    """The stand-in's prefix of `version` (made once per machine and Python)."""
    root = Path(tempfile.gettempdir()) / f"nixos-migrate-grafana-standin-{os.getuid()}" / version
    program = root / "bin" / "grafana"
    text = prefix_script(str(provision.shared_python()), [str(TESTS), *site.getsitepackages()], RELEASES[version])
    if not program.is_file() or program.read_text() != text:
        program.parent.mkdir(parents=True, exist_ok=True)
        tmp = program.with_name(f"grafana.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.rename(program)
    defaults = root / "share" / "grafana" / "conf" / "defaults.ini"
    defaults.parent.mkdir(parents=True, exist_ok=True)
    if not defaults.is_file() or defaults.read_text() != DEFAULTS_INI:
        defaults.write_text(DEFAULTS_INI)
    provision.traversable(program.parent)
    provision.traversable(defaults.parent)
    return root


@dataclass
class Instance:
    """Grafana's data directory under `root` owned by an unprivileged user, as NixOS's
    services.grafana keeps it (/var/lib/grafana, the database in data/grafana.db)."""

    root: Path
    user: pwd.struct_passwd = field(default_factory=provision.server_user)

    @property
    def data_dir(self) -> Path:
        return self.root / "grafana"

    @property
    def database(self) -> Path:
        return self.data_dir / "data" / "grafana.db"

    def create(self) -> Instance:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        provision.traversable(self.root)
        provision.chown_tree(self.root, self.user)
        os.chmod(self.data_dir, 0o700)
        return self

    def settings(self, versions: tuple[str, ...] = ALL, **extra: object) -> dict[str, object]:
        return {"data_dir": str(self.data_dir), "packages": {v: str(package(v)) for v in versions}} | extra

    def grafana(self, version: str) -> str:
        """The stand-in of `version` started on the database until it has migrated it (then
        stopped), as the service's user; what it printed."""
        argv = [str(package(version) / "bin" / "grafana"), "server", "--homepath",
                str(package(version) / "share" / "grafana"), f"cfg:paths.data={self.data_dir}",
                f"cfg:database.path={self.database}", "cfg:server.http_addr=127.0.0.1",
                f"cfg:server.http_port={provision.free_port()}"]  # fmt: skip
        script = (
            "import subprocess, sys, time, urllib.request, json\n"
            "p = subprocess.Popen(sys.argv[2:])\n"
            "port = [a for a in sys.argv if a.startswith('cfg:server.http_port=')][0].split('=')[1]\n"
            "while p.poll() is None:\n"
            "    try:\n"
            "        urllib.request.urlopen(f'http://127.0.0.1:{port}/api/health', timeout=2); break\n"
            "    except OSError: time.sleep(0.05)\n"
            "p.terminate(); sys.exit(p.wait())\n"
        )
        return provision.run_as(self.user, [str(provision.shared_python()), "-c", script, "run", *argv])


def make_database(root: Path, series: str, *, dashboards: int = 120, annotations: int = 5000) -> Instance:
    instance = Instance(root / "grafana").create()
    instance.grafana(series)
    fill(instance.database, dashboards=dashboards, annotations=annotations)
    provision.chown_tree(instance.data_dir, instance.user)
    return instance


def _panel_json(rnd: random.Random, i: int, panels: int) -> str:
    return json.dumps({
        "title": f"Dashboard {i} — Überblick 监控",
        "uid": f"dash{i:05d}",
        "schemaVersion": 39,
        "templating": {"list": [{"name": "host", "query": "label_values(up, instance)", "type": "query"}]},
        "panels": [
            {"id": p, "type": rnd.choice(["timeseries", "stat", "table", "gauge"]), "title": f"panel {p} ✓",
             "gridPos": {"h": 8, "w": 12, "x": (p % 2) * 12, "y": p * 8},
             "targets": [{"expr": f'rate(http_requests_total{{job="api",code=~"5.."}}[5m]) * {p}', "refId": "A"}],
             "options": {"legend": {"displayMode": "table", "calcs": ["mean", "max"]}, "nested": {"a": {"b": [p] * 5}}}}
            for p in range(panels)
        ],
    }, ensure_ascii=False)  # fmt: skip


def fill(db_path: Path, *, dashboards: int, annotations: int) -> None:
    """A deployment's worth of rows in the tables the release has (columns it lacks are skipped)."""
    rnd = random.Random(7)
    now = "2025-06-01 12:00:00"
    with sqlite3.connect(db_path) as db:
        columns = {t: {r[1] for r in db.execute(f"PRAGMA table_info(`{t}`)")} for t in COLUMNS}

        def insert(table: str, row: dict[str, Any]) -> int:
            row = {k: v for k, v in row.items() if k in columns[table]}
            names = ", ".join(f"`{k}`" for k in row)
            cur = db.execute(
                f"INSERT INTO `{table}` ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )
            return int(cur.lastrowid or 0)

        # Grafana's first start made the main org and its admin (id 1 each)
        orgs = [1, *(insert("org", {"version": 0, "name": name, "created": now, "updated": now})
                     for name in ("Ops — Nord", "研究所"))]  # fmt: skip
        users = []
        for i in range(150):
            login = ["root", "jörg", "o'brien", "名前"][i] if i < 4 else f"user{i}"
            uid = insert("user", {
                "version": 0, "login": login, "email": f"{login}@example.org", "name": login.title(),
                "password": hashlib.sha256(login.encode()).hexdigest()[:50], "salt": f"s{i:08d}", "rands": "r",
                "org_id": orgs[i % 3], "is_admin": int(i == 0), "is_disabled": int(i % 37 == 5),
                "is_service_account": int(i % 50 == 49), "help_flags1": i % 4, "created": now, "updated": now,
                "email_verified": 1, "theme": "dark" if i % 2 else "",
            })  # fmt: skip
            users.append(uid)
            insert("org_user", {"org_id": orgs[i % 3], "user_id": uid, "role": ["Admin", "Editor", "Viewer"][i % 3],
                                "created": now, "updated": now})  # fmt: skip
        teams = [insert("team", {"name": f"team-{t} ä", "org_id": orgs[t % 3], "email": f"t{t}@example.org",
                                 "created": now, "updated": now}) for t in range(12)]  # fmt: skip
        for i, uid in enumerate(users[:120]):
            insert("team_member", {"org_id": orgs[i % 3], "team_id": teams[i % 12], "user_id": uid,
                                   "permission": 4 if i % 10 == 0 else 0, "created": now, "updated": now})  # fmt: skip
        folders = []
        for f in range(6):
            folders.append(insert("dashboard", {
                "version": 1, "slug": f"folder-{f}", "title": f"Folder {f} ✓", "data": json.dumps({"title": f"F{f}"}),
                "org_id": orgs[f % 3], "created": now, "updated": now, "is_folder": 1, "folder_id": 0,
                "uid": f"fold{f:04d}", "created_by": users[0], "updated_by": users[0], "has_acl": 0,
            }))  # fmt: skip
        dash_ids = []
        for i in range(dashboards):
            panels = 200 if i == 0 else rnd.randint(2, 40)  # dashboard 0 is ~2 MiB of JSON
            data = _panel_json(rnd, i, panels) if i else _panel_json(rnd, i, 2600)
            did = insert("dashboard", {
                "version": 3, "slug": f"dashboard-{i}", "title": f"Dashboard {i} — Überblick", "data": data,
                "org_id": orgs[i % 3], "created": now, "updated": now, "is_folder": 0,
                "folder_id": folders[i % 6] if i % 4 else 0, "uid": f"dash{i:05d}", "created_by": users[i % 150],
                "updated_by": users[(i + 1) % 150], "gnet_id": 1860 if i % 30 == 0 else None, "has_acl": 0,
            })  # fmt: skip
            dash_ids.append(did)
            for term in ["prod", "ünïcode"] if i % 2 else ["dev"]:
                insert("dashboard_tag", {"dashboard_id": did, "term": term})
            for v in (1, 2, 3):
                insert("dashboard_version", {"dashboard_id": did, "parent_version": v - 1, "restored_from": 0,
                                             "version": v, "created": now, "created_by": users[i % 150],
                                             "message": f"v{v} ✎", "data": data if v == 3 else "{}"})  # fmt: skip
        for i, uid in enumerate(users[:80]):
            insert("star", {"user_id": uid, "dashboard_id": dash_ids[i % len(dash_ids)]})
            insert("preferences", {"org_id": orgs[i % 3], "user_id": uid, "team_id": 0, "version": 0,
                                   "home_dashboard_id": dash_ids[i % len(dash_ids)], "timezone": "Europe/Berlin",
                                   "theme": "light", "week_start": "monday", "json_data": '{"language":"de-DE"}',
                                   "created": now, "updated": now})  # fmt: skip
        for d in range(9):
            insert("data_source", {
                "org_id": orgs[d % 3], "version": 1, "type": ["prometheus", "loki", "postgres"][d % 3],
                "name": f"source {d} ✓", "access": "proxy", "url": f"http://10.0.0.{d}:9090", "basic_auth": 0,
                "is_default": int(d < 3), "json_data": json.dumps({"httpMethod": "POST", "timeInterval": "15s"}),
                "secure_json_data": json.dumps({"password": "I1rANnlPL3NkRm9jZjRoNEdYcA=="}), "created": now,
                "updated": now, "with_credentials": 0, "uid": f"ds{d:07d}", "read_only": 0,
            })  # fmt: skip
        for k in range(20):
            insert("api_key", {"org_id": orgs[k % 3], "name": f"key {k}", "key": hashlib.sha256(bytes([k])).hexdigest(),
                               "role": "Viewer", "created": now, "updated": now,
                               "expires": None if k % 2 else 1893456000})  # fmt: skip
        for a in range(annotations):
            epoch = 1_700_000_000_000 + a * 60_000
            insert("annotation", {
                "org_id": orgs[a % 3], "alert_id": 0, "user_id": users[a % 150], "panel_id": a % 7,
                "dashboard_id": dash_ids[a % len(dash_ids)] if a % 5 else 0, "category_id": 0, "type": "",
                "title": "", "text": f"deploy #{a} — ok ✓" if a % 3 else "", "metric": "", "prev_state": "",
                "new_state": "", "data": json.dumps({"a": a}), "epoch": epoch,
                "epoch_end": epoch + (300_000 if a % 4 == 0 else 0),
            })  # fmt: skip
        for r in range(30):
            insert("alert_rule", {
                "org_id": orgs[r % 3], "title": f"rule {r} ⚠", "condition": "C",
                "data": json.dumps([{"refId": "A", "model": {"expr": f"up == {r}"}}]), "updated": now,
                "interval_seconds": 60, "version": 1, "uid": f"rule{r:05d}", "namespace_uid": f"fold{r % 6:04d}",
                "rule_group": f"group {r % 4}", "for": 300, "labels": json.dumps({"severity": "page", "team": "ö"}),
                "annotations": json.dumps({"summary": f"rule {r} fired"}),
            })  # fmt: skip


def digest(instance: Instance) -> dict[str, Any]:
    """Per table: the rows of the columns every release has, hashed in a fixed order."""
    found: dict[str, Any] = {}
    with sqlite3.connect(f"{instance.database.as_uri()}?mode=ro", uri=True) as db:
        for table, columns in COLUMNS.items():
            rows = db.execute(f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `{table}`").fetchall()
            found[table] = (len(rows), hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest())
    return found


def logged(instance: Instance) -> list[str]:
    """The migration ids the database logs with success, in its order."""
    with sqlite3.connect(f"{instance.database.as_uri()}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT migration_id FROM migration_log WHERE success = 1 ORDER BY id")]


class Rig(ServiceRig):
    """Grafana's data directory with a manifest (service `grafana`) and the CLI bound to it."""

    plugin = "grafana"
    service_name = "grafana"
    versions = ALL


def dump_digest(instance: Instance) -> str:
    """The whole database as SQL (schema, every row, the migration log): equal digests are the
    same data, whatever pages SQLite wrote them to."""
    with sqlite3.connect(f"{instance.database.as_uri()}?mode=ro", uri=True) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
