"""The simulation's own error, importable without loading the simulation."""


class SimulationError(Exception):
    """The simulation could not go on: an agent did not finish a phase in time."""
