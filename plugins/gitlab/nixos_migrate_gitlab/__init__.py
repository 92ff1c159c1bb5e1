"""nixos-migrate plugin: GitLab through its required upgrade stops."""
