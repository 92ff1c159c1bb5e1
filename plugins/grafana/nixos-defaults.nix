# What the grafana plugin takes from services.grafana, for a service of this plugin however it is
# declared (services.nixos-migrate.services.<name> or services.nixos-migrate.grafana): its unit,
# its user, and settings (the data directory, the database's type and path, the secret key's file
# when it is given as "$__file{…}", and the package map with the current and previous series).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # series ("11.6") -> store path, the current package's and the previous ones'
  current, # the current package's series
  dataDir ? "/var/lib/grafana", # services.grafana.dataDir
  databaseType ? "sqlite3", # services.grafana.settings.database.type
  databasePath ? "${dataDir}/data/grafana.db", # services.grafana.settings.database.path
  secretKey ? null, # services.grafana.settings.security.secret_key
}:
let
  # only a file reference is passed on: a secret written into the Nix store is not ours to copy
  secretFile = if secretKey == null then null else builtins.match "[$]__file[{](.*)[}]" secretKey;
in
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the grafana package map lacks the current series ${current}"
else
  {
    unit = "grafana.service";
    user = "grafana";
    settings = {
      data_dir = dataDir;
      database_type = databaseType;
      database_path = databasePath;
      inherit packages;
    }
    // (if secretFile == null then { } else { secret_key_file = builtins.head secretFile; });
  }
