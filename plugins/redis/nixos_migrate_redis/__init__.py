"""nixos-migrate plugin for Redis and Valkey."""
