# The mysql plugin's part of the NixOS module (imported by nixos/module.nix): the defaults every
# service of this plugin gets from services.mysql (MariaDB or MySQL), and the convenience option
# services.nixos-migrate.mysql, which declares services.nixos-migrate.services.mysql.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.services.nixos-migrate;
  my = config.services.mysql;
  mym = cfg.mysql;
  series = p: lib.versions.majorMinor (lib.getVersion p);
  packages = lib.listToAttrs (map (p: lib.nameValuePair (series p) "${p}") (mym.previousPackages ++ [ my.package ]));
in
{
  options.services.nixos-migrate.mysql = import ../../nixos/convenience.nix lib {
    service = "MariaDB/MySQL";
    unit = "mysql.service";
    versions = "release series";
  }
  // {
    enable = mkEnableOption ''
      migrations of services.mysql: declares services.nixos-migrate.services.mysql with the current
      release series as its target (its settings, user and unit come from services.mysql, as for
      any service of the mysql plugin)
    '';
    method = mkOption {
      type = types.nullOr (
        types.enum [
          "inplace"
          "logical"
        ]
      );
      default = null;
      description = "How up steps go (docs/mysql.md); null: the plugin's default (inplace). Downgrades are logical.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !mym.enable || my.enable;
        message = "services.nixos-migrate.mysql.enable needs services.mysql.enable";
      }
    ];
    services.nixos-migrate.defaults.mysql = mkIf my.enable (
      import ./nixos-defaults.nix {
        inherit packages;
        current = series my.package;
        inherit (my) dataDir user;
        inherit (mym) method;
      }
    );
    services.nixos-migrate.services.mysql = mkIf (mym.enable && my.enable) {
      plugin = mkDefault "mysql";
      target = mkDefault (series my.package);
      autoApply = mkDefault mym.autoApply;
      accept = mkDefault mym.accept;
    };
    # the previous series' binaries stay in the closure for downgrades
    system.extraDependencies = mym.previousPackages;
  };
}
