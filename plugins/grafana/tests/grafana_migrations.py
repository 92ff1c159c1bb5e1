"""Grafana's migrations for the stand-in `grafana` (grafana_standin.py): the migration ids of
Grafana's published migrator (pkg/services/sqlstore/migrations and the alerting store's) for the
tables a deployment keeps its work in, in registration order, each with the SQLite statements
that give the table Grafana's layout on SQLite (INTEGER for BigInt and Bool, TEXT for NVarchar,
DATETIME), and the series that first registers it.

The ids are Grafana's; which of the stand-in's three releases registers each is the stand-in's
own grouping (the plugin never relies on it: it reads every release's list from its package).
As in Grafana, a later release registers its new migrations among the old ones (a new column of
`user` comes with the user migrations), so a database upgraded from 9.5 logs them in another
order than a fresh 11.6 database: only the set of ids says what the schema is.
"""

from __future__ import annotations

#: (series that registers it, migration id, SQL statements) in registration order
MIGRATIONS: list[tuple[str, str, list[str]]] = [
    (
        "9.5",
        "create user table",
        [
            "CREATE TABLE `user` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `version` INTEGER NOT NULL, "
            "`login` TEXT NOT NULL, `email` TEXT NOT NULL, `name` TEXT NULL, `password` TEXT NULL, `salt` TEXT NULL, "
            "`rands` TEXT NULL, `company` TEXT NULL, `account_id` INTEGER NOT NULL, `is_admin` INTEGER NOT NULL, "
            "`created` DATETIME NOT NULL, `updated` DATETIME NOT NULL)"
        ],
    ),
    ("9.5", "Add email_verified flag", ["ALTER TABLE `user` ADD COLUMN `email_verified` INTEGER NULL"]),
    ("9.5", "Add user.theme column", ["ALTER TABLE `user` ADD COLUMN `theme` TEXT NULL"]),
    ("9.5", "add unique index user.login", ["CREATE UNIQUE INDEX `UQE_user_login` ON `user` (`login`)"]),
    ("9.5", "add unique index user.email", ["CREATE UNIQUE INDEX `UQE_user_email` ON `user` (`email`)"]),
    ("9.5", "drop unique index user.login", ["DROP INDEX `UQE_user_login`"]),
    ("9.5", "drop unique index user.email", ["DROP INDEX `UQE_user_email`"]),
    ("9.5", "rename table user to user_old", ["ALTER TABLE `user` RENAME TO `user_old`"]),
    (
        "9.5",
        "create user table v2",
        [
            "CREATE TABLE `user` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `version` INTEGER NOT NULL, "
            "`login` TEXT NOT NULL, `email` TEXT NOT NULL, `name` TEXT NULL, `password` TEXT NULL, `salt` TEXT NULL, "
            "`rands` TEXT NULL, `company` TEXT NULL, `org_id` INTEGER NOT NULL, `is_admin` INTEGER NOT NULL, "
            "`email_verified` INTEGER NULL, `theme` TEXT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    ("9.5", "add unique index user.login v2", ["CREATE UNIQUE INDEX `UQE_user_login` ON `user` (`login`)"]),
    ("9.5", "add unique index user.email v2", ["CREATE UNIQUE INDEX `UQE_user_email` ON `user` (`email`)"]),
    (
        "9.5",
        "copy data from user_old table",
        [
            "INSERT INTO `user` (id, version, login, email, name, password, salt, rands, company, org_id, is_admin, "
            "created, updated) SELECT id, version, login, email, name, password, salt, rands, company, account_id, "
            "is_admin, created, updated FROM `user_old`"
        ],
    ),
    ("9.5", "Drop old table user_old", ["DROP TABLE IF EXISTS `user_old`"]),
    (
        "9.5",
        "Add column help_flags1 to user table",
        ["ALTER TABLE `user` ADD COLUMN `help_flags1` INTEGER NOT NULL DEFAULT 0"],
    ),
    ("9.5", "Add last_seen_at column to user", ["ALTER TABLE `user` ADD COLUMN `last_seen_at` DATETIME NULL"]),
    (
        "9.5",
        "Add is_disabled column to user",
        ["ALTER TABLE `user` ADD COLUMN `is_disabled` INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        "9.5",
        "Add is_service_account column to user",
        ["ALTER TABLE `user` ADD COLUMN `is_service_account` INTEGER NOT NULL DEFAULT 0"],
    ),
    ("10.4", "Add uid column to user", ["ALTER TABLE `user` ADD COLUMN `uid` TEXT NULL"]),
    (
        "10.4",
        "Update uid column values for users",
        ["UPDATE `user` SET uid = 'u' || substr('000000000' || id, -9) WHERE uid IS NULL"],
    ),
    ("10.4", "Add unique index user_uid", ["CREATE UNIQUE INDEX `UQE_user_uid` ON `user` (`uid`)"]),
    (
        "11.6",
        "Add is_provisioned column to user",
        ["ALTER TABLE `user` ADD COLUMN `is_provisioned` INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        "9.5",
        "create star table",
        [
            "CREATE TABLE `star` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `user_id` INTEGER NOT NULL, "
            "`dashboard_id` INTEGER NOT NULL)"
        ],
    ),
    (
        "9.5",
        "add unique index star.user_id_dashboard_id",
        ["CREATE UNIQUE INDEX `UQE_star_user_id_dashboard_id` ON `star` (`user_id`,`dashboard_id`)"],
    ),
    ("11.6", "Add column dashboard_uid in star", ["ALTER TABLE `star` ADD COLUMN `dashboard_uid` TEXT NULL"]),
    ("11.6", "Add column org_id in star", ["ALTER TABLE `star` ADD COLUMN `org_id` INTEGER NULL DEFAULT 1"]),
    (
        "9.5",
        "create org table v1",
        [
            "CREATE TABLE `org` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `version` INTEGER NOT NULL, "
            "`name` TEXT NOT NULL, `address1` TEXT NULL, `address2` TEXT NULL, `city` TEXT NULL, `state` TEXT NULL, "
            "`zip_code` TEXT NULL, `country` TEXT NULL, `billing_email` TEXT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    ("9.5", "create index UQE_org_name - v1", ["CREATE UNIQUE INDEX `UQE_org_name` ON `org` (`name`)"]),
    (
        "9.5",
        "create org_user table v1",
        [
            "CREATE TABLE `org_user` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`user_id` INTEGER NOT NULL, `role` TEXT NOT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    ("9.5", "create index IDX_org_user_org_id - v1", ["CREATE INDEX `IDX_org_user_org_id` ON `org_user` (`org_id`)"]),
    (
        "9.5",
        "create index UQE_org_user_org_id_user_id - v1",
        ["CREATE UNIQUE INDEX `UQE_org_user_org_id_user_id` ON `org_user` (`org_id`,`user_id`)"],
    ),
    (
        "9.5",
        "create index IDX_org_user_user_id - v1",
        ["CREATE INDEX `IDX_org_user_user_id` ON `org_user` (`user_id`)"],
    ),
    (
        "9.5",
        "create dashboard table v2",
        [
            "CREATE TABLE `dashboard` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `version` INTEGER NOT NULL, "
            "`slug` TEXT NOT NULL, `title` TEXT NOT NULL, `data` TEXT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`created` DATETIME NOT NULL, `updated` DATETIME NOT NULL)"
        ],
    ),
    (
        "9.5",
        "create index IDX_dashboard_org_id - v2",
        ["CREATE INDEX `IDX_dashboard_org_id` ON `dashboard` (`org_id`)"],
    ),
    (
        "9.5",
        "Add column updated_by in dashboard - v2",
        ["ALTER TABLE `dashboard` ADD COLUMN `updated_by` INTEGER NULL"],
    ),
    (
        "9.5",
        "Add column created_by in dashboard - v2",
        ["ALTER TABLE `dashboard` ADD COLUMN `created_by` INTEGER NULL"],
    ),
    ("9.5", "Add column gnetId in dashboard", ["ALTER TABLE `dashboard` ADD COLUMN `gnet_id` INTEGER NULL"]),
    ("9.5", "Add column plugin_id in dashboard", ["ALTER TABLE `dashboard` ADD COLUMN `plugin_id` TEXT NULL"]),
    (
        "9.5",
        "Add column folder_id in dashboard",
        ["ALTER TABLE `dashboard` ADD COLUMN `folder_id` INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        "9.5",
        "Add column isFolder in dashboard",
        ["ALTER TABLE `dashboard` ADD COLUMN `is_folder` INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        "9.5",
        "Add column has_acl in dashboard",
        ["ALTER TABLE `dashboard` ADD COLUMN `has_acl` INTEGER NOT NULL DEFAULT 0"],
    ),
    ("9.5", "Add column uid in dashboard", ["ALTER TABLE `dashboard` ADD COLUMN `uid` TEXT NULL"]),
    ("9.5", "Update uid column values in dashboard", ["UPDATE dashboard SET uid=printf('%09d',id) WHERE uid IS NULL"]),
    (
        "9.5",
        "Add unique index dashboard_org_id_uid",
        ["CREATE UNIQUE INDEX `UQE_dashboard_org_id_uid` ON `dashboard` (`org_id`,`uid`)"],
    ),
    ("9.5", "Add column is_public", ["ALTER TABLE `dashboard` ADD COLUMN `is_public` INTEGER NOT NULL DEFAULT 0"]),
    ("10.4", "Add column folder_uid in dashboard", ["ALTER TABLE `dashboard` ADD COLUMN `folder_uid` TEXT NULL"]),
    (
        "10.4",
        "Populate dashboard folder_uid column",
        [
            "UPDATE `dashboard` SET folder_uid = (SELECT f.uid FROM `dashboard` f WHERE f.id = `dashboard`.folder_id "
            "AND f.org_id = `dashboard`.org_id) WHERE folder_id != 0"
        ],
    ),
    ("11.6", "Add deleted for dashboard", ["ALTER TABLE `dashboard` ADD COLUMN `deleted` DATETIME NULL"]),
    ("11.6", "Add index for deleted", ["CREATE INDEX `IDX_dashboard_deleted` ON `dashboard` (`deleted`)"]),
    (
        "9.5",
        "create dashboard_tag table",
        [
            "CREATE TABLE `dashboard_tag` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
            "`dashboard_id` INTEGER NOT NULL, `term` TEXT NOT NULL)"
        ],
    ),
    (
        "9.5",
        "Add index for dashboard_id in dashboard_tag",
        ["CREATE INDEX `IDX_dashboard_tag_dashboard_id` ON `dashboard_tag` (`dashboard_id`)"],
    ),
    (
        "9.5",
        "create data_source table v2",
        [
            "CREATE TABLE `data_source` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`version` INTEGER NOT NULL, `type` TEXT NOT NULL, `name` TEXT NOT NULL, `access` TEXT NOT NULL, "
            "`url` TEXT NOT NULL, `password` TEXT NULL, `user` TEXT NULL, `database` TEXT NULL, "
            "`basic_auth` INTEGER NOT NULL, `basic_auth_user` TEXT NULL, `basic_auth_password` TEXT NULL, "
            "`is_default` INTEGER NOT NULL, `json_data` TEXT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    (
        "9.5",
        "create index UQE_data_source_org_id_name - v2",
        ["CREATE UNIQUE INDEX `UQE_data_source_org_id_name` ON `data_source` (`org_id`,`name`)"],
    ),
    (
        "9.5",
        "Add column with_credentials",
        ["ALTER TABLE `data_source` ADD COLUMN `with_credentials` INTEGER NOT NULL DEFAULT 0"],
    ),
    ("9.5", "Add secure json data column", ["ALTER TABLE `data_source` ADD COLUMN `secure_json_data` TEXT NULL"]),
    ("9.5", "Add read_only data column", ["ALTER TABLE `data_source` ADD COLUMN `read_only` INTEGER NULL"]),
    ("9.5", "Add uid column", ["ALTER TABLE `data_source` ADD COLUMN `uid` TEXT NOT NULL DEFAULT 0"]),
    ("9.5", "Update uid value", ["UPDATE `data_source` SET uid=printf('%09d',id)"]),
    (
        "9.5",
        "Add unique index datasource_org_id_uid",
        ["CREATE UNIQUE INDEX `UQE_data_source_org_id_uid` ON `data_source` (`org_id`,`uid`)"],
    ),
    ("10.4", "Add is_prunable column", ["ALTER TABLE `data_source` ADD COLUMN `is_prunable` INTEGER NULL DEFAULT 0"]),
    ("11.6", "Add api_version column", ["ALTER TABLE `data_source` ADD COLUMN `api_version` TEXT NULL"]),
    (
        "9.5",
        "create api_key table v2",
        [
            "CREATE TABLE `api_key` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`name` TEXT NOT NULL, `key` TEXT NOT NULL, `role` TEXT NOT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL, `expires` INTEGER NULL, `service_account_id` INTEGER NULL)"
        ],
    ),
    ("9.5", "create index UQE_api_key_key - v2", ["CREATE UNIQUE INDEX `UQE_api_key_key` ON `api_key` (`key`)"]),
    ("10.4", "Add last_used_at to api_key table", ["ALTER TABLE `api_key` ADD COLUMN `last_used_at` DATETIME NULL"]),
    (
        "9.5",
        "create preferences table v3",
        [
            "CREATE TABLE `preferences` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`user_id` INTEGER NOT NULL, `version` INTEGER NOT NULL, `home_dashboard_id` INTEGER NOT NULL, "
            "`timezone` TEXT NOT NULL, `theme` TEXT NOT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    ("9.5", "Add column team_id in preferences", ["ALTER TABLE `preferences` ADD COLUMN `team_id` INTEGER NULL"]),
    ("9.5", "Add column week_start in preferences", ["ALTER TABLE `preferences` ADD COLUMN `week_start` TEXT NULL"]),
    ("9.5", "Add column preferences.json_data", ["ALTER TABLE `preferences` ADD COLUMN `json_data` TEXT NULL"]),
    (
        "9.5",
        "create annotation table v5",
        [
            "CREATE TABLE `annotation` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`alert_id` INTEGER NULL, `user_id` INTEGER NULL, `dashboard_id` INTEGER NULL, `panel_id` INTEGER NULL, "
            "`category_id` INTEGER NULL, `type` TEXT NOT NULL, `title` TEXT NOT NULL, `text` TEXT NOT NULL, "
            "`metric` TEXT NULL, `prev_state` TEXT NOT NULL, `new_state` TEXT NOT NULL, `data` TEXT NOT NULL, "
            "`epoch` INTEGER NOT NULL)"
        ],
    ),
    (
        "9.5",
        "Add column epoch_end to annotation table",
        ["ALTER TABLE `annotation` ADD COLUMN `epoch_end` INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        "9.5",
        "Add index for org_id_epoch_end_epoch on annotation table",
        ["CREATE INDEX `IDX_annotation_org_id_epoch_end_epoch` ON `annotation` (`org_id`,`epoch_end`,`epoch`)"],
    ),
    (
        "11.6",
        "Add dashboard_uid column to annotation table",
        ["ALTER TABLE `annotation` ADD COLUMN `dashboard_uid` TEXT NULL"],
    ),
    (
        "9.5",
        "create dashboard_version table v1",
        [
            "CREATE TABLE `dashboard_version` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
            "`dashboard_id` INTEGER NOT NULL, `parent_version` INTEGER NOT NULL, `restored_from` INTEGER NOT NULL, "
            "`version` INTEGER NOT NULL, `created` DATETIME NOT NULL, `created_by` INTEGER NOT NULL, "
            "`message` TEXT NOT NULL, `data` TEXT NOT NULL)"
        ],
    ),
    (
        "9.5",
        "add unique index dashboard_version.dashboard_id and dashboard_version.version",
        [
            "CREATE UNIQUE INDEX `UQE_dashboard_version_dashboard_id_version` ON `dashboard_version` "
            "(`dashboard_id`,`version`)"
        ],
    ),
    (
        "11.6",
        "Add api_version column to dashboard_version",
        ["ALTER TABLE `dashboard_version` ADD COLUMN `api_version` TEXT NULL"],
    ),
    (
        "9.5",
        "create team table",
        [
            "CREATE TABLE `team` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `name` TEXT NOT NULL, "
            "`org_id` INTEGER NOT NULL, `created` DATETIME NOT NULL, `updated` DATETIME NOT NULL)"
        ],
    ),
    (
        "9.5",
        "add unique index team_org_id_name",
        ["CREATE UNIQUE INDEX `UQE_team_org_id_name` ON `team` (`org_id`,`name`)"],
    ),
    ("9.5", "Add column email to team table", ["ALTER TABLE `team` ADD COLUMN `email` TEXT NULL"]),
    ("10.4", "Add column uid in team", ["ALTER TABLE `team` ADD COLUMN `uid` TEXT NULL"]),
    ("10.4", "Update uid column values in team", ["UPDATE team SET uid=printf('t%09d',id) WHERE uid IS NULL"]),
    (
        "10.4",
        "Add unique index team_org_id_uid",
        ["CREATE UNIQUE INDEX `UQE_team_org_id_uid` ON `team` (`org_id`,`uid`)"],
    ),
    (
        "9.5",
        "create team member table",
        [
            "CREATE TABLE `team_member` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`team_id` INTEGER NOT NULL, `user_id` INTEGER NOT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    (
        "9.5",
        "add unique index team_member_org_id_team_id_user_id",
        [
            "CREATE UNIQUE INDEX `UQE_team_member_org_id_team_id_user_id` ON `team_member` "
            "(`org_id`,`team_id`,`user_id`)"
        ],
    ),
    (
        "9.5",
        "Add column permission to team_member table",
        ["ALTER TABLE `team_member` ADD COLUMN `permission` INTEGER NULL"],
    ),
    (
        "9.5",
        "create kv_store table v1",
        [
            "CREATE TABLE `kv_store` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`namespace` TEXT NOT NULL, `key` TEXT NOT NULL, `value` TEXT NOT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
    (
        "9.5",
        "add index kv_store.org_id-namespace-key",
        ["CREATE UNIQUE INDEX `UQE_kv_store_org_id_namespace_key` ON `kv_store` (`org_id`,`namespace`,`key`)"],
    ),
    (
        "9.5",
        "create alert_rule table",
        [
            "CREATE TABLE `alert_rule` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `org_id` INTEGER NOT NULL, "
            "`title` TEXT NOT NULL, `condition` TEXT NOT NULL, `data` TEXT NOT NULL, `updated` DATETIME NOT NULL, "
            "`interval_seconds` INTEGER NOT NULL DEFAULT 60, `version` INTEGER NOT NULL DEFAULT 0, "
            "`uid` TEXT NOT NULL DEFAULT 0, `namespace_uid` TEXT NOT NULL, `rule_group` TEXT NOT NULL, "
            "`no_data_state` TEXT NOT NULL DEFAULT 'NoData', `exec_err_state` TEXT NOT NULL DEFAULT 'Alerting')"
        ],
    ),
    (
        "9.5",
        "add index in alert_rule on org_id and uid columns",
        ["CREATE UNIQUE INDEX `UQE_alert_rule_org_id_uid` ON `alert_rule` (`org_id`,`uid`)"],
    ),
    ("9.5", "add column for to alert_rule", ["ALTER TABLE `alert_rule` ADD COLUMN `for` INTEGER NOT NULL DEFAULT 0"]),
    ("9.5", "add column annotations to alert_rule", ["ALTER TABLE `alert_rule` ADD COLUMN `annotations` TEXT NULL"]),
    ("9.5", "add column labels to alert_rule", ["ALTER TABLE `alert_rule` ADD COLUMN `labels` TEXT NULL"]),
    (
        "10.4",
        "add is_paused column to alert_rule table",
        ["ALTER TABLE `alert_rule` ADD COLUMN `is_paused` INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        "10.4",
        "add notification_settings column to alert_rule table",
        ["ALTER TABLE `alert_rule` ADD COLUMN `notification_settings` TEXT NULL"],
    ),
    ("11.6", "add record column to alert_rule table", ["ALTER TABLE `alert_rule` ADD COLUMN `record` TEXT NULL"]),
    (
        "10.4",
        "create folder table",
        [
            "CREATE TABLE `folder` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `uid` TEXT NOT NULL, "
            "`org_id` INTEGER NOT NULL, `title` TEXT NOT NULL, `description` TEXT NULL, `parent_uid` TEXT NULL, "
            "`created` DATETIME NOT NULL, `updated` DATETIME NOT NULL)"
        ],
    ),
    (
        "10.4",
        "Add index for parent_uid",
        ["CREATE INDEX `IDX_folder_parent_uid_org_id` ON `folder` (`parent_uid`,`org_id`)"],
    ),
    (
        "10.4",
        "Add unique index for folder.uid and folder.org_id",
        ["CREATE UNIQUE INDEX `UQE_folder_uid_org_id` ON `folder` (`uid`,`org_id`)"],
    ),
    (
        "10.4",
        "Sync dashboard and folder table",
        [
            "INSERT INTO `folder` (uid, org_id, title, created, updated) SELECT uid, org_id, title, created, updated "
            "FROM `dashboard` WHERE is_folder = 1 AND NOT EXISTS (SELECT 1 FROM `folder` f WHERE f.uid = "
            "`dashboard`.uid AND f.org_id = `dashboard`.org_id)"
        ],
    ),
    (
        "11.6",
        "create cloud_migration_session_tmp_qwerty table",
        [
            "CREATE TABLE `cloud_migration_session` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
            "`uid` TEXT NULL, `auth_token` TEXT NULL, `slug` TEXT NOT NULL, `stack_id` INTEGER NOT NULL, "
            "`region_slug` TEXT NOT NULL, `cluster_slug` TEXT NOT NULL, `created` DATETIME NOT NULL, "
            "`updated` DATETIME NOT NULL)"
        ],
    ),
]
