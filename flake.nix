{
  description = "nixos-migrate: migrations for the data of NixOS's stateful services";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
        nixos-migrate = self.packages.${pkgs.system}.default;
      });

      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos/module.nix ];
          services.nixos-migrate.package = lib.mkDefault self.packages.${pkgs.system}.default;
        };

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.system}.default;
        postgresql-upgrade = pkgs.testers.runNixOSTest (import ./nixos/tests/postgresql-upgrade.nix { inherit self; });
      });
    };
}
