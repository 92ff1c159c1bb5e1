# The mongodb plugin's part of the NixOS module (imported by nixos/module.nix): the defaults every
# service of this plugin gets from services.mongodb, and the convenience option
# services.nixos-migrate.mongodb, which declares services.nixos-migrate.services.mongodb.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf;
  cfg = config.services.nixos-migrate;
  mdb = config.services.mongodb;
  mdbm = cfg.mongodb;
  major = p: lib.versions.majorMinor (lib.getVersion p);
  packages = lib.listToAttrs (map (p: lib.nameValuePair (major p) "${p}") (mdbm.previousPackages ++ [ mdb.package ]));
in
{
  options.services.nixos-migrate.mongodb = import ../../nixos/convenience.nix lib {
    service = "MongoDB";
    unit = "mongodb.service";
    versions = "majors (one after the other: 6.0, 7.0, ...)";
  }
  // {
    enable = mkEnableOption ''
      migrations of services.mongodb: declares services.nixos-migrate.services.mongodb with the
      current major as its target (its settings, user and unit come from services.mongodb, as for
      any service of the mongodb plugin)
    '';
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !mdbm.enable || mdb.enable;
        message = "services.nixos-migrate.mongodb.enable needs services.mongodb.enable";
      }
    ];
    services.nixos-migrate.defaults.mongodb = mkIf mdb.enable (
      import ./nixos-defaults.nix {
        inherit packages;
        current = major mdb.package;
        inherit (mdb) dbpath user replSetName;
      }
    );
    services.nixos-migrate.services.mongodb = mkIf (mdbm.enable && mdb.enable) {
      plugin = mkDefault "mongodb";
      target = mkDefault (major mdb.package);
      autoApply = mkDefault mdbm.autoApply;
      accept = mkDefault mdbm.accept;
    };
    # every major between the oldest kept and the current one stays in the closure: upgrades go
    # one major at a time, and downgrades below 7.0 start the older mongod on the data
    system.extraDependencies = mdbm.previousPackages;
  };
}
