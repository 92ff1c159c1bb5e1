# What the redis plugin takes from services.redis.servers.<name>, for a service of this plugin
# however it is declared (services.nixos-migrate.services."redis-<name>" or
# services.nixos-migrate.redis): its unit, its user, and settings (the data directory, the
# package map with the current and previous series, append-only, the flavour).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # series ("7.2", "valkey-8.0") -> store path, the current package's and the previous ones'
  current, # the current package's series
  name ? "", # the server's name in services.redis.servers ("" is the server called plain "redis")
  user ? null, # services.redis.servers.<name>.user (default: the server's own, as nixpkgs makes it)
  appendOnly ? null, # services.redis.servers.<name>.appendOnly
}:
let
  inherit (builtins) attrNames filter listToAttrs substring stringLength;
  given = attrs: listToAttrs (map (n: { name = n; value = attrs.${n}; }) (filter (n: attrs.${n} != null) (attrNames attrs)));
  # nixpkgs names a server's directory, unit and user "redis-<name>", or "redis" for the name ""
  redisName = if name == "" then "redis" else "redis-${name}";
in
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the redis package map lacks the current series ${current}"
else
  {
    unit = "${redisName}.service";
    user = if user != null then user else redisName;
    settings = given {
      data_dir = "/var/lib/${redisName}";
      appendonly = appendOnly;
      flavour = if substring 0 7 current == "valkey-" && stringLength current > 7 then "valkey" else "redis";
      inherit packages;
    };
  }
