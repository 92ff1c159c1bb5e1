"""nixos-migrate plugin: Grafana's SQLite database (its migration log)."""
