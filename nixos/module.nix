# services.nixos-migrate: migrations of stateful services' data, declared next to the services.
#
# The options mirror the manifest (DESIGN §6); the values become /etc/nixos-migrate/manifest.json,
# one oneshot unit per service (nixos-migrate-<name>.service) ordered before and required by the
# service's own unit, and a pre-switch check that refuses a switch whose migrations would be
# refused. The translation itself is pure Nix in ./lib.nix (tested without nixpkgs).
#
# What is particular to a kind of service lives with its plugin: plugins/<name>/nixos.nix, a
# module fragment imported here for every plugin directory that has one, sets
# services.nixos-migrate.defaults.<plugin> from the nixpkgs service's options and may add a
# convenience option. A third-party plugin's fragment is imported by the configuration itself.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.nixos-migrate;
  pure = import ./lib.nix;
  inherit (lib) mkEnableOption mkIf mkOption types;

  fragments = pure.fragments ../plugins;

  jsonFormat = pkgs.formats.json { };

  # an optional value: null leaves the key out of the manifest
  optional =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  actionType = types.submodule {
    options = {
      script = optional types.lines "Bash program run as the service's user; $NIXOS_MIGRATE_FROM/_TO, $BACKUP are set.";
      warn = optional types.str "A warning the operator must accept (services.<name>.accept) before the step runs.";
      backup = optional types.lines "Bash program writing the backup into $BACKUP (default: the core backs up settings.paths).";
      restore = optional types.lines "Bash program restoring from $BACKUP; required with `backup`.";
    };
  };

  migrationType = types.submodule {
    options = {
      version = mkOption {
        type = types.str;
        example = "2024-05-01";
        description = "The date naming this migration (YYYY-MM-DD); the data's version after `up`.";
      };
      up = mkOption {
        type = actionType;
        default = { };
        description = "What brings the data to this version (RFC 155).";
      };
      down = mkOption {
        type = actionType;
        default = { };
        description = "What brings the data back from this version (RFC 155).";
      };
    };
  };

  serviceType = types.submodule (
    { name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = "Whether nixos-migrate manages the data of this service.";
        };
        plugin = optional types.str "The plugin that knows this kind of data (default: the service's name).";
        target = mkOption {
          type = types.str;
          description = "The version the data must reach.";
        };
        unit = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "postgresql.service";
          description = ''
            The service's own unit: stopped before a step, started after; the migration unit is
            ordered before it and required by it.
          '';
        };
        user = optional types.str "The user that owns the data; commands run as this user.";
        accept = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Target versions whose warnings, irreversible steps or data loss are accepted.";
        };
        after = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Services whose data is migrated first (GitLab after its PostgreSQL).";
        };
        settings = mkOption {
          type = jsonFormat.type;
          default = { };
          description = "The plugin's settings (snake_case keys, validated by the plugin).";
        };
        migrations = mkOption {
          type = types.listOf migrationType;
          default = [ ];
          description = "RFC 155 migrations for the built-in `scripts` plugin.";
        };
        autoApply = mkOption {
          type = types.bool;
          default = false;
          description = ''
            Run `nixos-migrate up ${name}` before the service starts. When false, the unit fails
            while steps are pending and names the command to run, so the service does not start
            on data of the wrong version.
          '';
        };
      };
    }
  );

  # the option values as the pure translation reads them (it leaves out what is null)
  values = {
    inherit (cfg) stateDir backupDir services defaults;
  };

  manifest = pure.manifest values;
  # the store path of this generation's manifest: the pre-switch check reads the new one
  manifestFile = jsonFormat.generate "nixos-migrate-manifest.json" manifest;
  tool = if cfg.plugins == [ ] then cfg.package else cfg.package.override { extraPlugins = cfg.plugins; };
  exe = "${tool}/bin/nixos-migrate";

in
{
  imports = fragments;

  options.services.nixos-migrate = {
    enable = mkEnableOption "nixos-migrate, migrations of stateful services' data";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ../nix/package.nix { }";
      description = "nixos-migrate with its built-in plugins (scripts, postgresql, ldap).";
    };

    plugins = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = ''
        Third-party plugin packages (Python, built with the same python3Packages) added to the
        tool's environment; found through their `nixos_migrate` entry point.
      '';
    };

    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/nixos-migrate";
      description = "The journal and the locks.";
    };

    backupDir = optional types.path "Where backups go (default: stateDir/backups). O(1) on btrfs, XFS with reflinks.";

    services = mkOption {
      type = types.attrsOf serviceType;
      default = { };
      description = "The services whose data nixos-migrate keeps at its target version.";
    };

    defaults = mkOption {
      type = types.attrsOf jsonFormat.type;
      default = { };
      internal = true;
      description = ''
        Per plugin: the unit, user and settings every service of that plugin gets unless it sets
        them itself; set by the plugins' fragments from the nixpkgs services' options.
      '';
    };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ tool ];
    environment.etc."nixos-migrate/manifest.json".source = manifestFile;
    systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0711 root root -" ];

    systemd.services =
      lib.mapAttrs' (
        name: unit:
        lib.nameValuePair (pure.unitName name) (
          unit
          // {
            path = [ config.systemd.package ];
            # a new manifest (a new target) runs the unit again at the switch
            restartTriggers = [ manifestFile ];
          }
        )
      ) (
        pure.units {
          cfg = values;
          inherit exe;
          manifestFile = "/etc/nixos-migrate/manifest.json";
        }
      )
      # after the service starts: the work the migration left for a running service
      // pure.settleUnits {
        cfg = values;
        inherit exe;
        manifestFile = "/etc/nixos-migrate/manifest.json";
      };

    system.preSwitchChecks.nixos-migrate = pure.preSwitchCheck {
      inherit exe;
      manifestFile = "${manifestFile}";
    };
  };
}
