# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Real MariaDB upgrades and downgrades: 10.5 -> 10.11 -> 11.8 in place, 11.8 -> 10.11 -> 10.5
by dump and load (big plain tables' rows as files), the corpus compared by an independent digest
at every version."""

from __future__ import annotations

from mariadb_env import Rig, content, make_instance


def test_up_through_every_series_then_down_again_keeps_every_object(tmp_path):
    instance = make_instance(tmp_path, "10.5")
    before = content(instance, "10.5")
    assert len([k for k in before if k.startswith("table ")]) >= 10
    rig = Rig(tmp_path, instance)

    planned = rig.cli("11.8", "plan", "--json")
    assert planned.code == 0, planned.output
    assert [(s["from_version"], s["to_version"]) for s in planned.json[0]["steps"]] == [
        ("10.5", "10.11"),
        ("10.11", "11.8"),
    ]
    result = rig.cli("11.8", "up", "--json")
    assert result.code == 0, result.output
    status = rig.cli("11.8", "status", "--json").json[0]
    assert status["data_version"] == "11.8" and status["dirty"] is None
    assert (instance.data_dir / "mariadb_upgrade_info").read_text().startswith("11.8")
    assert content(instance, "11.8") == before

    # a row written on 11.8 travels back down
    with instance.server("11.8") as server:
        server.execute("INSERT INTO shop.log (msg) VALUES ('written on 11.8')")
    after_write = content(instance, "11.8")
    assert after_write != before

    down = rig.cli("11.8", "down", "db", "--to", "10.11", "--json")
    assert down.code == 0, down.output
    # the big plain tables' rows went as files: an InnoDB table with generated columns, a foreign
    # key and a trigger (created after the rows: `log` counts no row per loaded order), blobs, a
    # partitioned table, an Aria table of a latin1 database; a BIT or a POINT column, system
    # versioning and small tables stay in the dump
    moved = next(c["detail"] for c in down.json[0]["steps"][0]["checks"] if c["name"] == "rows moved as files")
    tables = set(moved.split(" (")[0].split(", "))
    assert tables == {"shop.orders", "shop.blobs", "shop.measures", "legacy.cache"}, moved
    assert rig.cli("10.11", "status", "--json").json[0]["data_version"] == "10.11"
    assert content(instance, "10.11") == after_write

    verify = rig.cli("10.11", "verify", "--json")
    assert verify.code == 0, verify.output


def test_the_fingerprint_is_the_same_hashed_in_key_ranges_and_a_sample_reads_windows(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nixos_migrate_mysql import content
    from nixos_migrate_mysql.server import Server
    from nixos_migrate_mysql.settings import MysqlSettings

    instance = make_instance(tmp_path, "10.11", rows=20_000)
    settings = MysqlSettings(data_dir=instance.data_dir)
    with instance.server() as running:
        service = SimpleNamespace(settings=settings, state_dir=tmp_path)
        server = Server(service, "10.11", running.socket.parent, instance.data_dir, running.socket, running.log)  # type: ignore[arg-type]
        whole = content.fingerprint(server, instance.user.pw_name, jobs=1)
        monkeypatch.setattr(content, "SPLIT_ABOVE", 0)  # every table with an integer key in ranges
        split = content.fingerprint(server, instance.user.pw_name, jobs=3)
        sample = content.fingerprint(server, instance.user.pw_name, jobs=2, sample=True)
        again = content.fingerprint(server, instance.user.pw_name, jobs=1, sample=True)
        # the lowest id is in the first key range, which a sample always reads; the middle of the
        # second of the 64 ranges is in none that it reads
        low, high = server.query("SELECT MIN(id), MAX(id) FROM shop.orders")[0]
        unread = low + (high - low) // 64 * 3 // 2
        server.query(f"UPDATE shop.orders SET total = total + 1 WHERE id = {unread}")
        beside = content.fingerprint(server, instance.user.pw_name, jobs=2, sample=True)
        # windows of at most SAMPLE_KEYS keys: the first range's tail is beyond its window
        monkeypatch.setattr(content, "SAMPLE_KEYS", 16)
        narrow = content.fingerprint(server, instance.user.pw_name, jobs=2, sample=True)
        server.query(f"UPDATE shop.orders SET total = total + 1 WHERE id = {low + 16}")
        narrow_beside = content.fingerprint(server, instance.user.pw_name, jobs=2, sample=True)
        monkeypatch.setattr(content, "SAMPLE_KEYS", 2048)
        server.query(f"UPDATE shop.orders SET total = total + 1 WHERE id = {low}")
        changed = content.fingerprint(server, instance.user.pw_name, jobs=2, sample=True)
        server.close()
    assert split == whole
    assert "20000 rows" in whole["table shop.orders"]
    assert sample == again and sample != whole
    windows = content.SAMPLE_PARTS // content.SAMPLE_EVERY
    assert f"keys {low}..{high}, {windows} windows of up to 2048 read" in sample["table shop.orders"]
    # 20 000 keys: windows of 1/64 of them, every eighth read (a window is below 2048 keys)
    assert int(sample["table shop.orders"].split(": ")[1].split(" rows")[0]) < 20000 // 4
    assert f"{windows} windows of up to 16 read: {windows * 16} rows" in narrow["table shop.orders"]
    assert narrow_beside["table shop.orders"] == narrow["table shop.orders"]
    # a change outside the sample is not seen (the trade of verify_depth = sample), one inside is
    assert beside["table shop.orders"] == sample["table shop.orders"]
    assert changed["table shop.orders"] != sample["table shop.orders"]


def test_the_services_option_file_is_read_first_and_the_plugins_options_win(tmp_path):
    """NixOS's /etc/my.cnf as a production host has it: binary log, event scheduler on, the
    service's socket and port, a Galera switch; the private servers keep their own."""
    instance = make_instance(tmp_path, "10.5", rows=500)
    before = content(instance, "10.5")
    config = tmp_path / "my.cnf"
    config.write_text(
        "[mysqld]\nport = 3306\nsocket = /nonexistent/mysqld.sock\nlog-bin = mysql-bin\nevent_scheduler = ON\n"
        "innodb_buffer_pool_size = 64M\nloose-wsrep_on = ON\ncharacter-set-server = utf8mb4\n"
    )
    config.chmod(0o644)
    rig = Rig(tmp_path, instance, config_file=str(config))
    result = rig.cli("10.11", "up", "--json")
    assert result.code == 0, result.output
    assert content(instance, "10.11") == before
    assert not list(instance.data_dir.glob("mysql-bin.*")), "a private server wrote a binary log"
    verify = rig.cli("10.11", "verify", "--json")
    assert verify.code == 0, verify.output


def test_an_admin_account_with_a_password_from_a_file(tmp_path):
    """admin_user logs in with the password of password_file (the clients get it in a private
    option file); it appears in no output, journal, log or file the plugin leaves."""
    instance = make_instance(tmp_path, "10.5", rows=500)
    secret = "s3cr\\et-\"pass' word"
    with instance.server() as server:
        escaped = secret.replace("\\", "\\\\").replace("'", "\\'")
        server.execute(
            f"CREATE USER migrator@localhost IDENTIFIED BY '{escaped}';"
            " GRANT ALL PRIVILEGES ON *.* TO migrator@localhost WITH GRANT OPTION;"
        )
    before = content(instance, "10.5")
    password_file = tmp_path / "password"
    password_file.write_text(secret + "\n")
    password_file.chmod(0o600)
    rig = Rig(tmp_path, instance, admin_user="migrator", password_file=str(password_file))
    result = rig.cli("10.11", "up", "--json")
    assert result.code == 0, result.output
    assert content(instance, "10.11") == before
    assert secret not in result.output
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    refused = Rig(tmp_path, instance, admin_user="migrator", password_file=str(wrong)).cli("10.11", "verify")
    assert refused.code != 0 and "Access denied for user 'migrator'" in refused.output


def test_a_big_table_loaded_just_before_shutdown_is_sized_by_its_pages_not_by_saved_statistics(tmp_path):
    """70 MiB loaded into an empty table and shut down at once: the saved InnoDB statistics still
    say a few pages. The in-place upgrade must sample it (not hash it whole and CHECK it whole),
    and the logical copy's checks, on a server started again, must see its real size too."""
    instance = make_instance(tmp_path, "10.11", rows=2_000, history=False)
    with instance.server() as server:
        server.execute(
            "CREATE DATABASE bulk; CREATE TABLE bulk.items (id INT PRIMARY KEY, payload VARCHAR(1000)) ENGINE=InnoDB;"
            "SET SESSION max_recursive_iterations = 1000000; INSERT INTO bulk.items"
            " WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 70000)"
            " SELECT n, REPEAT(MD5(n), 31) FROM s;"
        )
    with instance.server() as server:
        connection = server.connect()
        cursor = connection.cursor()
        cursor.execute("SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bulk'")
        [(saved,)] = cursor.fetchall()
        connection.close()
    assert saved < 1 << 20, f"the saved statistics were already right ({saved} bytes): the test shows nothing"
    before = content(instance, "10.11")
    rig = Rig(tmp_path, instance)

    def check(result, name):
        return next(c for s in result.json[0]["steps"] for c in s["checks"] if c["name"] == name)

    up = rig.cli("11.8", "up", "--json")
    assert up.code == 0, up.output
    assert "1 of 64 MiB and more left to the sampled fingerprint" in check(up, "CHECK TABLE of every table")["detail"]
    assert content(instance, "11.8") == before
    down = rig.cli("11.8", "down", "db", "--to", "10.11", "--json")
    assert down.code == 0, down.output
    assert check(down, "content equals the fingerprint before the step")["ok"]
    assert content(instance, "10.11") == before


def test_a_table_keyed_by_negative_numbers_is_hashed_whole_in_key_ranges(tmp_path, monkeypatch):
    """Key ranges below zero (a signed key counting down from 0): split on any number of workers,
    the fingerprint counts every row, as the table read whole does."""
    from types import SimpleNamespace

    from nixos_migrate_mysql import content
    from nixos_migrate_mysql.server import Server
    from nixos_migrate_mysql.settings import MysqlSettings
    from nixos_migrate_mysql.testing import Instance

    instance = Instance(tmp_path / "mysql", "10.11").create()
    with instance.server() as running:
        running.execute(
            "CREATE DATABASE ledger; USE ledger; CREATE TABLE moves (id BIGINT PRIMARY KEY, amount INT);"
            " INSERT INTO ledger.moves SELECT -seq, seq % 97 FROM seq_1_to_5000;"
            " INSERT INTO ledger.moves SELECT seq, seq % 89 FROM seq_1_to_300;"
        )
        service = SimpleNamespace(settings=MysqlSettings(data_dir=instance.data_dir), state_dir=tmp_path)
        server = Server(service, "10.11", running.socket.parent, instance.data_dir, running.socket, running.log)  # type: ignore[arg-type]
        whole = content.fingerprint(server, instance.user.pw_name, jobs=1)
        monkeypatch.setattr(content, "SPLIT_ABOVE", 0)
        split = content.fingerprint(server, instance.user.pw_name, jobs=3)
        server.close()
    assert "5300 rows" in whole["table ledger.moves"]
    assert split == whole
