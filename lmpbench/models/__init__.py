"""Small force fields written to the model contract (see lmpbench.contract)."""

from lmpbench.models.toy import LennardJones, Morse, ToyMessagePassing, periodic_energy_forces

__all__ = ["LennardJones", "Morse", "ToyMessagePassing", "periodic_energy_forces"]
