"""nixos-migrate plugin for OpenLDAP (slapd)."""
