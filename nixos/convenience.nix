# The options every plugin's convenience switch shares (services.nixos-migrate.<plugin>): the
# previous versions' packages, the acceptances, autoApply. A plugin's fragment takes them with
# `import ../../nixos/convenience.nix lib { … }` and adds its own.
lib:
{
  service, # the nixpkgs service's name, for the descriptions ("PostgreSQL", "OpenLDAP")
  unit, # its unit
  versions, # what its versions are called ("majors", "versions")
}:
let
  inherit (lib) mkOption types;
in
{
  previousPackages = mkOption {
    type = types.listOf types.package;
    default = [ ];
    description = ''
      The ${versions} of ${service} the data may be at: kept in the system closure, so that the
      upgrade and a downgrade find their binaries.
    '';
  };
  accept = mkOption {
    type = types.listOf types.str;
    default = [ ];
    description = "${service} ${versions} whose warnings are accepted.";
  };
  autoApply = mkOption {
    type = types.bool;
    default = false;
    description = "Migrate before ${unit} starts, instead of refusing to start it.";
  };
}
