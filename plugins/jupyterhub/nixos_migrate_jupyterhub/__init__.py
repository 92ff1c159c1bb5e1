"""nixos-migrate plugin for JupyterHub."""
