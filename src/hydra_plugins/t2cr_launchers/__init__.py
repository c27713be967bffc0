"""Hydra launchers that ship with t2cr (Hydra finds launcher plugins only under `hydra_plugins`)."""
