# The gitlab plugin's part of the NixOS module (imported by nixos/module.nix): the defaults every
# service of this plugin gets from services.gitlab, and the convenience option
# services.nixos-migrate.gitlab, which declares services.nixos-migrate.services.gitlab.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.services.nixos-migrate;
  gl = config.services.gitlab;
  glm = cfg.gitlab;
  series = p: lib.versions.majorMinor (lib.getVersion p);
in
{
  options.services.nixos-migrate.gitlab = import ../../nixos/convenience.nix lib {
    service = "GitLab";
    unit = "gitlab-db-config.service";
    versions = "versions";
  }
  // {
    enable = mkEnableOption ''
      migrations of services.gitlab through GitLab's required upgrade stops: declares
      services.nixos-migrate.services.gitlab with the current package's version as its target
    '';
    packages = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = lib.literalExpression ''{ "17.8" = gitlab-17-8-with-tools; "18.2" = gitlab-18-2-with-tools; }'';
      description = ''
        GitLab version (major.minor) -> a prefix with bin/gitlab-rake (and bin/gitlab-backup,
        bin/gitlab-rails where there are such) wrapped for this host, and GitLab's tree in
        share/gitlab: one for the current version and one for every required stop on the way
        (docs/gitlab.md). Their store paths stay in the system closure.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !glm.enable || gl.enable;
        message = "services.nixos-migrate.gitlab.enable needs services.gitlab.enable";
      }
    ];
    services.nixos-migrate.defaults.gitlab = mkIf gl.enable (
      import ./nixos-defaults.nix {
        packages = lib.mapAttrs (_: toString) glm.packages;
        current = series gl.packages.gitlab;
        inherit (gl) statePath user databaseHost databaseName databaseUsername databasePasswordFile;
        backupPath = gl.backup.path;
        backupSkip = if gl.backup.skip == null then [ ] else lib.toList gl.backup.skip;
        psql = "${config.services.postgresql.package}/bin/psql";
      }
    );
    services.nixos-migrate.services.gitlab = mkIf (glm.enable && gl.enable) {
      plugin = mkDefault "gitlab";
      target = mkDefault (series gl.packages.gitlab);
      autoApply = mkDefault glm.autoApply;
      accept = mkDefault glm.accept;
      # GitLab's database is migrated first when nixos-migrate manages it too
      after = mkIf cfg.postgresql.enable (mkDefault [ "postgresql" ]);
    };
    system.extraDependencies = glm.previousPackages ++ lib.attrValues glm.packages;
  };
}
