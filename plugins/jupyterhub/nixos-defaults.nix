# What the jupyterhub plugin takes from services.jupyterhub, for a service of this plugin however it
# is declared (services.nixos-migrate.services.<name> or services.nixos-migrate.jupyterhub): its
# unit, its user, and settings (the state directory the hub works in, where its SQLite database
# and cookie secret are, and the package map of hub environments by release series).
# Builtins only: the tests evaluate it without nixpkgs. Explicit settings win over these.
{
  packages, # release series ("5.5") -> a Python environment with jupyterhub (current and previous)
  current, # the current environment's series
  stateDirectory ? "jupyterhub", # services.jupyterhub.stateDirectory (under /var/lib)
}:
if !(packages ? ${current}) then
  throw "services.nixos-migrate: the jupyterhub package map lacks the current series ${current}"
else
  {
    unit = "jupyterhub.service";
    user = "root"; # nixpkgs runs the hub as root
    settings = {
      data_dir = "/var/lib/${stateDirectory}";
      inherit packages;
    };
  }
