# nixos-migrate with its built-in plugins (scripts, postgresql, ldap) as one application.
# Third-party plugins: `nixos-migrate.override { extraPlugins = [ myPlugin ]; }` (the NixOS
# module's `plugins` option does this); they are found through their `nixos_migrate` entry point.
{
  lib,
  python3Packages,
  extraPlugins ? [ ],
}:
let
  inherit (python3Packages) buildPythonApplication buildPythonPackage hatchling;
  version = "0.1.0";

  # the plugins depend on the core, which this application is: that edge is provided here,
  # not by each plugin's own closure
  plugin =
    name: deps:
    buildPythonPackage {
      pname = "nixos-migrate-${name}";
      inherit version;
      pyproject = true;
      src = ../plugins/${name};
      build-system = [ hatchling ];
      dependencies = deps;
      pythonRemoveDeps = [ "nixos-migrate" ];
      # psycopg[binary] is the PyPI wheel with libpq inside; nixpkgs' psycopg links libpq itself
      pythonRelaxDeps = [ "psycopg" ];
      dontCheckRuntimeDeps = true;
      # the plugins' tests start real servers of several versions as root: `./run tests` and the
      # NixOS VM test in nixos/tests run them
      doCheck = false;
    };
in
buildPythonApplication {
  pname = "nixos-migrate";
  inherit version;
  pyproject = true;
  src = ../core;
  build-system = [ hatchling ];
  dependencies =
    (with python3Packages; [
      pluggy
      pydantic
      click
      rich
    ])
    ++ [
      (plugin "scripts" [ ])
      (plugin "postgresql" [ python3Packages.psycopg ])
      (plugin "ldap" [ python3Packages.ldap3 ])
    ]
    ++ extraPlugins;
  pythonImportsCheck = [
    "nixos_migrate"
    "nixos_migrate_scripts"
    "nixos_migrate_postgresql"
    "nixos_migrate_ldap"
  ];
  doCheck = false; # see above
  meta = {
    description = "Migrations for the data of NixOS's stateful services: plan, backup, up, down, verify";
    license = lib.licenses.mit;
    mainProgram = "nixos-migrate";
    platforms = lib.platforms.linux;
  };
}
