# What the postgresql plugin takes from services.postgresql, for a service of this plugin however
# it is declared (services.nixos-migrate.services.<name> or services.nixos-migrate.postgresql):
# its unit, its user, and settings (data directory, the package map with the current and
# previous majors, the previous major's data directory, the port `settle` reaches it on).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  current, # services.postgresql.package.psqlSchema
  packages, # major -> store path, the current package's and the previous ones'
  dataDir, # services.postgresql.dataDir
  port ? null, # services.postgresql.settings.port
  oldDataDir ? null,
  method ? null,
}:
let
  inherit (builtins) attrNames filter foldl' fromJSON;
  number = fromJSON; # majors are plain integers ("9" ... "18")
  others = filter (m: m != current) (attrNames packages);
  newest = foldl' (best: m: if best == null || number m > number best then m else best) null;
  # the data of the nearest other major, where NixOS keeps it (/var/lib/postgresql/<major>)
  defaultOld =
    let
      older = filter (m: number m < number current) others;
      pick = if older != [ ] then newest older else newest others;
    in
    if pick == null then null else "/var/lib/postgresql/${pick}";
  given = attrs: builtins.listToAttrs (map (n: { name = n; value = attrs.${n}; }) (filter (n: attrs.${n} != null) (attrNames attrs)));
in
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the postgresql package map lacks the current major ${current}"
else
  {
    unit = "postgresql.service";
    user = "postgres";
    settings = given {
      data_dir = dataDir;
      old_data_dir = if oldDataDir != null then oldDataDir else defaultOld;
      inherit packages method;
      # settle computes the planner statistics through the running service
      service_port = port;
    };
  }
