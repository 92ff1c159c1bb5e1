#!/usr/bin/env bash
# A throwaway service migrated by the `scripts` plugin: up through three dated migrations, verify,
# down again through a backup. Everything lives in a temporary directory, removed at the end.
set -euo pipefail
nm=${NIXOS_MIGRATE:-nixos-migrate}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/data"
printf 'id,name\n1,Zoë\n' > "$tmp/data/users.csv"
cat > "$tmp/manifest.toml" <<TOML
state_dir = "$tmp/state"
[services.guestbook]
plugin = "scripts"
target = "2024-03-01"
accept = ["2024-03-01"]
[services.guestbook.settings]
paths = ["$tmp/data"]
environment = { DATA = "$tmp/data" }
verify = 'head -1 "\$DATA/users.csv" | grep -q "^id,name"'
[[services.guestbook.migrations]]
version = "2024-01-01"
up = { script = 'sed -i "1s/\$/,email/" "\$DATA/users.csv"' }
down = { script = 'sed -i "1s/,email\$//" "\$DATA/users.csv"' }
[[services.guestbook.migrations]]
version = "2024-03-01"
up = { script = 'gzip -k "\$DATA/users.csv"', warn = "adds a compressed copy" }
TOML
set -x
$nm -m "$tmp/manifest.toml" plan
$nm -m "$tmp/manifest.toml" up
$nm -m "$tmp/manifest.toml" verify
$nm -m "$tmp/manifest.toml" down guestbook --to 2024-01-01 --accept-data-loss
$nm -m "$tmp/manifest.toml" history guestbook
