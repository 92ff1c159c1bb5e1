# The ldap plugin's part of the NixOS module (imported by nixos/module.nix): the defaults every
# service of this plugin gets from services.openldap, and services.nixos-migrate.openldap.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf;
  cfg = config.services.nixos-migrate;
  ol = config.services.openldap;
  olm = cfg.openldap;
  version = p: lib.versions.majorMinor (lib.getVersion p);
  packages = lib.listToAttrs (map (p: lib.nameValuePair (version p) "${p}") (olm.previousPackages ++ [ ol.package ]));
  databaseDirs = lib.unique (
    lib.concatMap (child: lib.optional (child ? attrs.olcDbDirectory) child.attrs.olcDbDirectory) (
      lib.attrValues (ol.settings.children or { })
    )
  );
in
{
  options.services.nixos-migrate.openldap = {
    enable = mkEnableOption ''
      migrations of services.openldap: declares services.nixos-migrate.services.openldap (plugin
      ldap) with the current version as its target (settings, user and unit from services.openldap)
    '';
  }
  // import ../../nixos/convenience.nix lib {
    service = "OpenLDAP";
    unit = "openldap.service";
    versions = "versions";
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !olm.enable || ol.enable;
        message = "services.nixos-migrate.openldap.enable needs services.openldap.enable";
      }
    ];
    services.nixos-migrate.defaults.ldap = mkIf ol.enable (
      import ./nixos-defaults.nix {
        inherit packages databaseDirs;
        configDir = ol.configDir or null;
      }
    );
    services.nixos-migrate.services.openldap = mkIf (olm.enable && ol.enable) {
      plugin = mkDefault "ldap";
      target = mkDefault (version ol.package);
      autoApply = mkDefault olm.autoApply;
      accept = mkDefault olm.accept;
    };
    system.extraDependencies = olm.previousPackages;
  };
}
