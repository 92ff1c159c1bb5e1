# The grafana plugin's part of the NixOS module (imported by nixos/module.nix): the defaults every
# service of this plugin gets from services.grafana, and the convenience option
# services.nixos-migrate.grafana, which declares services.nixos-migrate.services.grafana.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf;
  cfg = config.services.nixos-migrate;
  gf = config.services.grafana;
  gfm = cfg.grafana;
  series = p: lib.versions.majorMinor (lib.getVersion p);
  packages = lib.listToAttrs (map (p: lib.nameValuePair (series p) "${p}") (gfm.previousPackages ++ [ gf.package ]));
  db = gf.settings.database or { };
in
{
  options.services.nixos-migrate.grafana = import ../../nixos/convenience.nix lib {
    service = "Grafana";
    unit = "grafana.service";
    versions = "release series (each one the data passed through, for its list of migrations)";
  }
  // {
    enable = mkEnableOption ''
      migrations of services.grafana's SQLite database: declares services.nixos-migrate.services.grafana
      with the current release series as its target (a down step restores the backup taken before
      the matching up step: Grafana has no down migrations)
    '';
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !gfm.enable || gf.enable;
        message = "services.nixos-migrate.grafana.enable needs services.grafana.enable";
      }
    ];
    services.nixos-migrate.defaults.grafana = mkIf gf.enable (
      import ./nixos-defaults.nix {
        inherit packages;
        current = series gf.package;
        inherit (gf) dataDir;
        databaseType = db.type or "sqlite3";
        databasePath = db.path or "${gf.dataDir}/data/grafana.db";
        secretKey = gf.settings.security.secret_key or null;
      }
    );
    services.nixos-migrate.services.grafana = mkIf (gfm.enable && gf.enable) {
      plugin = mkDefault "grafana";
      target = mkDefault (series gf.package);
      autoApply = mkDefault gfm.autoApply;
      accept = mkDefault gfm.accept;
    };
    # the previous series stay in the closure: detection reads each one's migrations, and a
    # restored database is verified by the older release's server
    system.extraDependencies = gfm.previousPackages;
  };
}
