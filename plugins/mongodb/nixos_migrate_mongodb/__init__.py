"""nixos-migrate plugin for MongoDB."""
