# The redis plugin's part of the NixOS module (imported by nixos/module.nix): the defaults each
# server of services.redis.servers gets (defaults."redis/redis-<name>", so that a service named
# after the server's unit finds them), and the convenience option services.nixos-migrate.redis,
# which declares services.nixos-migrate.services."redis-<name>" for every enabled server.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkDefault mkEnableOption mkIf;
  cfg = config.services.nixos-migrate;
  rd = config.services.redis;
  rdm = cfg.redis;
  # Valkey's series carry its name: its versions and Redis's are ordered by what each loads
  series = p: (if lib.hasPrefix "valkey" (p.pname or "") then "valkey-" else "") + lib.versions.majorMinor (lib.getVersion p);
  packages = lib.listToAttrs (map (p: lib.nameValuePair (series p) "${p}") (rdm.previousPackages ++ [ rd.package ]));
  servers = lib.filterAttrs (_: s: s.enable) rd.servers;
  serviceName = name: if name == "" then "redis" else "redis-${name}";
in
{
  options.services.nixos-migrate.redis = import ../../nixos/convenience.nix lib {
    service = "Redis/Valkey";
    unit = "each redis-<name>.service";
    versions = "release series";
  }
  // {
    enable = mkEnableOption ''
      migrations of every enabled services.redis.servers.<name>: declares
      services.nixos-migrate.services."redis-<name>" with the current series as its target (its
      settings, user and unit come from that server, as for any service of the redis plugin)
    '';
  };

  config = mkIf cfg.enable {
    services.nixos-migrate.defaults = lib.mapAttrs' (
      name: s:
      lib.nameValuePair "redis/${serviceName name}" (
        import ./nixos-defaults.nix {
          inherit packages name;
          current = series rd.package;
          inherit (s) user appendOnly;
        }
      )
    ) servers;
    services.nixos-migrate.services = mkIf rdm.enable (
      lib.mapAttrs' (
        name: _:
        lib.nameValuePair (serviceName name) {
          plugin = mkDefault "redis";
          target = mkDefault (series rd.package);
          autoApply = mkDefault rdm.autoApply;
          accept = mkDefault rdm.accept;
        }
      ) servers
    );
    # the previous series' binaries stay in the closure for downgrades
    system.extraDependencies = rdm.previousPackages;
  };
}
