"""pullguard: an image firewall for container registries."""
