# The postgresql plugin's part of the NixOS module (imported by nixos/module.nix): the defaults
# every service of this plugin gets from services.postgresql, and the convenience option
# services.nixos-migrate.postgresql, which declares services.nixos-migrate.services.postgresql.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.services.nixos-migrate;
  pg = config.services.postgresql;
  pgm = cfg.postgresql;
  packages = lib.listToAttrs (map (p: lib.nameValuePair p.psqlSchema "${p}") (pgm.previousPackages ++ [ pg.package ]));
in
{
  options.services.nixos-migrate.postgresql = import ../../nixos/convenience.nix lib {
    service = "PostgreSQL";
    unit = "postgresql.service";
    versions = "majors";
  }
  // {
    enable = mkEnableOption ''
      migrations of services.postgresql: declares services.nixos-migrate.services.postgresql with
      the current major as its target (its settings, user and unit come from services.postgresql,
      as for any service of the postgresql plugin)
    '';
    oldDataDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Where the data of the previous major lives (default: /var/lib/postgresql/<major>).";
    };
    method = mkOption {
      type = types.nullOr (
        types.enum [
          "auto"
          "link"
          "copy"
          "clone"
          "copy-file-range"
          "swap"
          "dump"
        ]
      );
      default = null;
      description = "How pg_upgrade carries the files (docs/postgresql.md); null: the plugin's default (auto).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !pgm.enable || pg.enable;
        message = "services.nixos-migrate.postgresql.enable needs services.postgresql.enable";
      }
    ];
    services.nixos-migrate.defaults.postgresql = mkIf pg.enable (
      import ./nixos-defaults.nix {
        current = pg.package.psqlSchema;
        inherit packages;
        inherit (pg) dataDir;
        port = pg.settings.port or null;
        inherit (pgm) oldDataDir method;
      }
    );
    services.nixos-migrate.services.postgresql = mkIf (pgm.enable && pg.enable) {
      target = mkDefault pg.package.psqlSchema;
      autoApply = mkDefault pgm.autoApply;
      accept = mkDefault pgm.accept;
    };
    # the previous majors' binaries stay in the closure for pg_upgrade and downgrades
    system.extraDependencies = pgm.previousPackages;
  };
}
