"""The one error every simulator backend raises for what it cannot do (carla-free)."""

from perception.errors import PerceptionError


class SimError(PerceptionError):
    """The simulator cannot be reached, started or set up, or refuses what we ask (a town, map,
    blueprint, spawn point, camera size)."""
