"""splade_peft's Hydra launchers: Hydra instantiates a launcher only from the hydra_plugins namespace."""
