# The jupyterhub plugin's part of the NixOS module (imported by nixos/module.nix): the defaults every
# service of this plugin gets from services.jupyterhub, and the convenience option
# services.nixos-migrate.jupyterhub, which declares services.nixos-migrate.services.jupyterhub.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.services.nixos-migrate;
  jh = config.services.jupyterhub;
  jhm = cfg.jupyterhub;
  # the hub's environment is a Python environment: its series is the jupyterhub package's
  current = lib.versions.majorMinor jhm.version;
  packages = jhm.previousEnvironments // { ${current} = "${jh.jupyterhubEnv}"; };
in
{
  options.services.nixos-migrate.jupyterhub = import ../../nixos/convenience.nix lib {
    service = "JupyterHub";
    unit = "jupyterhub.service";
    versions = "release series";
  }
  // {
    enable = mkEnableOption ''
      migrations of services.jupyterhub's database: declares services.nixos-migrate.services.jupyterhub
      with the current release series as its target
    '';
    version = mkOption {
      type = types.str;
      default = pkgs.python3Packages.jupyterhub.version;
      description = "The JupyterHub release in services.jupyterhub.jupyterhubEnv.";
    };
    previousEnvironments = mkOption {
      type = types.attrsOf types.package;
      default = { };
      example = lib.literalExpression ''{ "5.5" = pkgs.python3.withPackages (p: [ p.jupyterhub ]); }'';
      description = ''
        Hub environments of earlier release series, by series: kept in the closure for
        downgrades (alembic's downgrade runs with the newer one's scripts, verify starts the older).
      '';
    };
  };

  config = mkIf cfg.enable {
    services.nixos-migrate.defaults.jupyterhub = mkIf jh.enable (
      import ./nixos-defaults.nix {
        inherit packages current;
        inherit (jh) stateDirectory;
      }
    );
    services.nixos-migrate.services.jupyterhub = mkIf (jhm.enable && jh.enable) {
      plugin = mkDefault "jupyterhub";
      target = mkDefault current;
      autoApply = mkDefault jhm.autoApply;
      accept = mkDefault jhm.accept;
    };
    system.extraDependencies = lib.attrValues jhm.previousEnvironments ++ jhm.previousPackages;
  };
}
