# What the gitlab plugin takes from services.gitlab, for a service of this plugin however it is
# declared (services.nixos-migrate.services.<name> or services.nixos-migrate.gitlab): its unit,
# its user, and settings (the state dir, the database, the backup path and what it skips, the
# package map, the psql of the PostgreSQL it runs on).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # GitLab version ("17.8") -> a prefix with bin/gitlab-rake (and share/gitlab), current and previous
  current, # the current package's major.minor
  statePath ? "/var/gitlab/state", # services.gitlab.statePath
  user ? "gitlab", # services.gitlab.user
  databaseHost ? "", # services.gitlab.databaseHost ("": the local socket)
  databaseName ? "gitlab",
  databaseUsername ? "gitlab",
  databasePasswordFile ? null,
  backupPath ? null, # services.gitlab.backup.path (null: <statePath>/backup)
  backupSkip ? [ ], # services.gitlab.backup.skip, as a list
  psql ? null, # "${services.postgresql.package}/bin/psql"
}:
let
  inherit (builtins) attrNames filter listToAttrs;
  given = attrs: listToAttrs (map (n: { name = n; value = attrs.${n}; }) (filter (n: attrs.${n} != null) (attrNames attrs)));
in
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the gitlab package map lacks the current version ${current}"
else
  {
    # GitLab's units require gitlab-db-config.service (it runs the migrations on every start):
    # ordered before it, the migration runs before any of them, and stopping it stops them
    unit = "gitlab-db-config.service";
    inherit user;
    settings = given {
      state_dir = statePath;
      database = given {
        host = if databaseHost == "" then "/run/postgresql" else databaseHost;
        dbname = databaseName;
        user = databaseUsername;
        password_file = databasePasswordFile;
      };
      backup_path = backupPath;
      backup_skip = if backupSkip == [ ] then null else backupSkip;
      inherit packages psql;
    };
  }
