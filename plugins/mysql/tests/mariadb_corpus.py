"""A MariaDB corpus shaped like production: what the tests move through every hop.

Three databases of different character sets and owners (one with a dash in its name); InnoDB,
Aria and MyISAM tables; foreign keys with cascades; stored and virtual generated columns;
RANGE partitions with HASH subpartitions; a spatial index and a full-text index; JSON, ENUM, SET,
BIT, DECIMAL, DATETIME(6), TIMESTAMP; 4 MiB BLOBs; a system-versioned table with history; a
sequence; views (one with a definer and SQL SECURITY INVOKER); a procedure, a function, a
trigger and an event with definers; accounts with password, grants and a role; latin1 text with
accents and utf8mb4 text beyond the BMP; 10^5 rows in the biggest table.

`digest(connection)` reads it all back through mysql-connector-python with queries of its own
(every row of every table, history included; routine, trigger, event and view definitions from
information_schema; every account's privileges), independent of the plugin's fingerprint.
"""

from __future__ import annotations

import hashlib
from typing import Any

SYSTEM = ("mysql", "information_schema", "performance_schema", "sys")
#: privileges that a later series adds to what `GRANT ALL` holds
NEWER_PRIVILEGES = ("SHOW CREATE ROUTINE",)


def corpus_sql(rows: int = 100_000, *, history: bool = True) -> str:
    """The corpus with `rows` orders; `history`: its system-versioned table has history rows
    (which MariaDB before 10.11 cannot take from a dump)."""
    customers = max(rows // 5, 10)
    changes = "UPDATE prices SET price = 10.99 WHERE id = 1;\nDELETE FROM prices WHERE id = 2;" if history else ""
    return f"""
SET SESSION max_recursive_iterations = 1000000;
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE legacy CHARACTER SET latin1 COLLATE latin1_swedish_ci;
CREATE DATABASE `app-data` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER shop_owner@localhost IDENTIFIED BY 'owner-secret';
CREATE USER reporter@'%' IDENTIFIED BY 'reporter-secret';
CREATE ROLE analyst;
GRANT ALL ON shop.* TO shop_owner@localhost;
GRANT SELECT ON shop.* TO analyst;
GRANT SELECT, INSERT ON `app-data`.* TO reporter@'%';
GRANT analyst TO reporter@'%';
USE shop;
CREATE TABLE customers (
  id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(200) NOT NULL, email VARCHAR(200) UNIQUE,
  created DATETIME(6) NOT NULL, balance DECIMAL(12,2), flags SET('a','b','c'), kind ENUM('person','company'),
  bits BIT(8), doc JSON, FULLTEXT KEY ft (name)
) ENGINE=InnoDB;
CREATE TABLE orders (
  id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, total DECIMAL(12,2),
  placed TIMESTAMP NOT NULL DEFAULT '2024-01-01 00:00:00', note TEXT,
  total_with_tax DECIMAL(14,2) AS (total * 1.2) STORED, note_len INT AS (CHAR_LENGTH(note)) VIRTUAL,
  FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE, KEY (placed)
) ENGINE=InnoDB;
CREATE TABLE measures (id INT NOT NULL, taken DATE NOT NULL, value DOUBLE, PRIMARY KEY (id, taken))
  ENGINE=InnoDB PARTITION BY RANGE (YEAR(taken)) SUBPARTITION BY HASH (id) SUBPARTITIONS 2 (
  PARTITION p2022 VALUES LESS THAN (2023), PARTITION p2023 VALUES LESS THAN (2024),
  PARTITION pmax VALUES LESS THAN MAXVALUE);
CREATE TABLE places (id INT PRIMARY KEY, pos POINT NOT NULL, SPATIAL KEY (pos)) ENGINE=InnoDB;
CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB;
CREATE TABLE log (id INT PRIMARY KEY AUTO_INCREMENT, msg VARCHAR(255)) ENGINE=Aria;
CREATE TABLE prices (id INT PRIMARY KEY, price DECIMAL(10,2)) ENGINE=InnoDB WITH SYSTEM VERSIONING;
CREATE SEQUENCE invoice_seq START WITH 1000 INCREMENT BY 5;
INSERT INTO customers (name, email, created, balance, flags, kind, bits, doc)
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {customers})
  SELECT CONCAT('Kunde ', n, IF(n % 7 = 0, ' Ærøskøbing', ''), IF(n % 11 = 0, ' 🐘', '')),
         CONCAT('c', n, '@example.org'), TIMESTAMP('2023-01-01') + INTERVAL n SECOND + INTERVAL n MICROSECOND,
         n * 1.25, ELT(1 + n % 3, 'a', 'a,b', 'c'), IF(n % 2, 'person', 'company'), n % 256,
         JSON_OBJECT('n', n, 'tags', JSON_ARRAY('x', n % 5))
  FROM s;
INSERT INTO orders (customer_id, total, placed, note)
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})
  SELECT 1 + n % {customers}, (n % 1000) + 0.99, TIMESTAMP('2024-01-01') + INTERVAL n MINUTE,
         IF(n % 3 = 0, NULL, REPEAT('note ', n % 20)) FROM s;
INSERT INTO measures
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {customers})
  SELECT n, DATE('2022-01-01') + INTERVAL (n % 1000) DAY, n / 7 FROM s;
INSERT INTO places VALUES (1, POINT(13.4, 52.5)), (2, POINT(-0.12, 51.5)), (3, POINT(2.35, 48.85));
INSERT INTO blobs
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 4)
  SELECT n, REPEAT(UNHEX(MD5(n)), 262144) FROM s;
INSERT INTO prices VALUES (1, 9.99), (2, 19.99);
{changes}
CREATE DEFINER = shop_owner@localhost SQL SECURITY INVOKER VIEW big_orders AS
  SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > 900;
CREATE VIEW customer_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id;
DELIMITER ;;
CREATE DEFINER = shop_owner@localhost PROCEDURE add_order(IN cid INT, IN amount DECIMAL(12,2))
BEGIN
  INSERT INTO orders (customer_id, total) VALUES (cid, amount);
END;;
CREATE FUNCTION vat(x DECIMAL(12,2)) RETURNS DECIMAL(12,2) DETERMINISTIC RETURN x * 0.2;;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
  INSERT INTO log (msg) VALUES (CONCAT('order ', NEW.id));;
CREATE EVENT purge_log ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM log WHERE id < 0;;
DELIMITER ;
INSERT INTO log (msg) VALUES ('started'), ('Grüße');
USE legacy;
CREATE TABLE kunden (id INT PRIMARY KEY, name VARCHAR(100), stadt VARCHAR(100)) ENGINE=MyISAM;
INSERT INTO kunden VALUES (1, 'Jürgen Müller', 'Köln'), (2, 'Ærøe', 'Århus'), (3, 'Ça va', 'Besançon');
CREATE TABLE cache (k VARCHAR(64) PRIMARY KEY, v MEDIUMTEXT) ENGINE=Aria;
INSERT INTO cache VALUES ('big', REPEAT('x', 1000000)), ('empty', '');
USE `app-data`;
CREATE TABLE `odd name` (`weird col` INT PRIMARY KEY, `select` VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO `odd name` VALUES (1, 'from'), (2, 'where');
"""


def _canonical(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "b:" + hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, set):
        return repr(sorted(value))
    return repr(value)


def digest(connection: Any) -> dict[str, str]:
    """What the data holds, read independently of the plugin (see the module's docstring)."""
    cursor = connection.cursor()

    def rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor.execute(sql, params)
        return list(cursor.fetchall())

    out: dict[str, str] = {}
    databases = [str(r[0]) for r in rows("SHOW DATABASES") if str(r[0]) not in SYSTEM]
    for db in databases:
        for name, kind in rows(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,)
        ):
            quoted = f"`{db}`.`{name}`"
            if kind == "VIEW":
                out[f"view {db}.{name}"] = "view"
                continue
            if kind == "SEQUENCE":
                out[f"sequence {db}.{name}"] = repr(rows(f"SELECT start_value, increment FROM {quoted}"))
                continue
            versioned = rows(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
                " AND TABLE_TYPE = 'SYSTEM VERSIONED'",
                (db, name),
            )[0][0]
            select = f"SELECT * FROM {quoted}" + (" FOR SYSTEM_TIME ALL" if versioned else "")
            lines = sorted("|".join(_canonical(v) for v in row) for row in rows(select))
            out[f"table {db}.{name}"] = f"{len(lines)} rows " + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    for schema, name, body in rows(
        "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES"
    ):
        if schema not in SYSTEM:
            out[f"routine {schema}.{name}"] = str(body)
    for schema, name, body in rows(
        "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS"
    ):
        if schema not in SYSTEM:
            out[f"trigger {schema}.{name}"] = str(body)
    for schema, name, status, body in rows(
        "SELECT EVENT_SCHEMA, EVENT_NAME, STATUS, EVENT_DEFINITION FROM information_schema.EVENTS"
    ):
        out[f"event {schema}.{name}"] = f"{status} {body}"
    grants = rows("SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES")
    grants += rows(
        "SELECT GRANTEE, CONCAT(TABLE_SCHEMA, ':', PRIVILEGE_TYPE) FROM information_schema.SCHEMA_PRIVILEGES"
    )
    for grantee, privilege in grants:
        # `GRANT ALL` means every privilege the server knows: 11.3 added SHOW CREATE ROUTINE to it
        if str(privilege).endswith(NEWER_PRIVILEGES):
            continue
        if any(user in str(grantee) for user in ("shop_owner", "reporter", "analyst")):
            out[f"grant {grantee} {privilege}"] = "granted"
    for grantee, role in rows("SELECT GRANTEE, ROLE_NAME FROM information_schema.APPLICABLE_ROLES"):
        out[f"role {grantee} {role}"] = "granted"
    return out
