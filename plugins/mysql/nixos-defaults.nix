# What the mysql plugin takes from services.mysql, for a service of this plugin however it is
# declared (services.nixos-migrate.services.<name> or services.nixos-migrate.mysql): its unit,
# its user, and settings (the data directory, the option file every private server reads first,
# the package map with the current and previous release series, the method).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # release series ("10.11") -> store path, the current package's and the previous ones'
  current, # the current package's series
  dataDir ? "/var/lib/mysql", # services.mysql.dataDir
  user ? "mysql", # services.mysql.user
  configFile ? "/etc/my.cnf", # where the module puts services.mysql.configFile
  method ? null,
}:
let
  inherit (builtins) attrNames filter listToAttrs;
  given = attrs: listToAttrs (map (n: { name = n; value = attrs.${n}; }) (filter (n: attrs.${n} != null) (attrNames attrs)));
in
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the mysql package map lacks the current series ${current}"
else
  {
    unit = "mysql.service";
    inherit user;
    settings = given {
      data_dir = dataDir;
      config_file = configFile;
      inherit packages method;
    };
  }
