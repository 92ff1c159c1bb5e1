"""nixos-migrate plugin `postgresql`: major upgrades with pg_upgrade, logical downgrades."""
