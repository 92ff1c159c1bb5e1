"""Test helpers for nixos-migrate and its plugins (also loaded as the pytest plugin `nixos_migrate`)."""
