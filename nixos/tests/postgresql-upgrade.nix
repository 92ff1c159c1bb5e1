# NixOS VM test: PostgreSQL 16 -> 17 across a generation change, with the unit's gate (autoApply
# off: postgresql.service does not start on 16's data until `nixos-migrate up` ran), the upgrade,
# an automatic one (autoApply on), and the logical downgrade back to 16.
#
#   nix build .#checks.x86_64-linux.postgresql-upgrade
#
# It needs KVM and nixpkgs, which the machines this project is developed on do not have: there the
# Python suite evaluates the module's pure part and runs the same upgrades on real servers.
{ self }:
{ lib, pkgs, ... }:
let
  rows = "SELECT count(*), sum(g), md5(string_agg(t, ',' ORDER BY g)) FROM t";
  psql = sql: "sudo -u postgres psql -XAtc ${lib.escapeShellArg sql}";
in
{
  name = "nixos-migrate-postgresql-upgrade";

  nodes.machine =
    { lib, pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation.memorySize = 2048;
      services.postgresql = {
        enable = true;
        package = pkgs.postgresql_16;
      };
      services.nixos-migrate = {
        enable = true;
        postgresql = {
          enable = true;
          previousPackages = [ pkgs.postgresql_17 ]; # for the way back
        };
      };
      specialisation = {
        gated.configuration = {
          services.postgresql.package = lib.mkForce pkgs.postgresql_17;
          services.nixos-migrate.postgresql.previousPackages = lib.mkForce [ pkgs.postgresql_16 ];
        };
        automatic.configuration = {
          services.postgresql.package = lib.mkForce pkgs.postgresql_17;
          services.nixos-migrate.postgresql = {
            previousPackages = lib.mkForce [ pkgs.postgresql_16 ];
            autoApply = true;
          };
        };
      };
    };

  testScript =
    { nodes, ... }:
    let
      system = nodes.machine.system.build.toplevel;
    in
    ''
      machine.wait_for_unit("postgresql.service")
      machine.succeed("${psql "CREATE TABLE t AS SELECT g, md5(g::text) AS t FROM generate_series(1, 100000) g"}")
      before = machine.succeed("${psql rows}")

      with subtest("the gate keeps postgresql stopped until the data is upgraded"):
          # the switch reports the failed gate unit; postgresql.service stays stopped
          machine.fail("${system}/specialisation/gated/bin/switch-to-configuration test")
          machine.fail("systemctl is-active postgresql.service")
          machine.succeed("journalctl -u nixos-migrate-postgresql.service -o cat | grep -F 'nixos-migrate up postgresql'")
          machine.succeed("nixos-migrate up postgresql")
          machine.succeed("systemctl start postgresql.service")
          machine.wait_for_unit("postgresql.service")
          machine.succeed("test \"$(cat /var/lib/postgresql/17/PG_VERSION)\" = 17")
          assert machine.succeed("${psql rows}") == before
          # the settle unit follows postgresql.service: planner statistics through the running server
          machine.wait_until_succeeds("${psql "SELECT count(*) > 0 FROM pg_stats WHERE tablename = 't'"} | grep -qx t")
          machine.succeed("journalctl -u nixos-migrate-postgresql-settle.service -o cat | grep -F 'planner statistics'")

      with subtest("down to 16 keeps rows written after the upgrade"):
          machine.succeed("${psql "INSERT INTO t VALUES (100001, 'after')"}")
          after = machine.succeed("${psql rows}")
          # back to the generation with 16: its gate holds postgresql until the data is back at 16
          machine.fail("${system}/bin/switch-to-configuration test")
          machine.succeed("nixos-migrate up postgresql")
          machine.succeed("systemctl start postgresql.service")
          machine.succeed("test \"$(cat /var/lib/postgresql/16/PG_VERSION)\" = 16")
          assert machine.succeed("${psql rows}") == after

      with subtest("autoApply upgrades before postgresql starts"):
          machine.succeed("${system}/specialisation/automatic/bin/switch-to-configuration test")
          machine.wait_for_unit("postgresql.service")
          machine.succeed("systemctl is-active nixos-migrate-postgresql.service")
          assert machine.succeed("${psql rows}") == after
          machine.succeed("nixos-migrate status postgresql --json | grep -q '\"recorded\": \"17\"'")
    '';
}
