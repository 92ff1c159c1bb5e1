# What the mongodb plugin takes from services.mongodb, for a service of this plugin however it is
# declared (services.nixos-migrate.services.<name> or services.nixos-migrate.mongodb): its unit,
# its user, and settings (the dbpath, the package map with the current and previous majors, the
# replica set a member belongs to).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # major ("7.0") -> store path, the current package's and the previous ones'
  current, # the current package's major
  dbpath ? "/var/db/mongodb", # services.mongodb.dbpath (nixpkgs' default)
  user ? "mongodb", # services.mongodb.user
  replSetName ? "", # services.mongodb.replSetName ("": a standalone server)
}:
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the mongodb package map lacks the current major ${current}"
else
  {
    unit = "mongodb.service";
    inherit user;
    settings = {
      db_path = dbpath;
      inherit packages;
    }
    // (if replSetName == "" then { } else { replica_set = replSetName; });
  }
