"""nixos-migrate plugin for MariaDB and MySQL (NixOS's `services.mysql`)."""
