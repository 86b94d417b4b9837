"""Simulated devices: SunSpec battery and PV inverters and a relay board, on loopback TCP or a
serial pseudo-terminal, acting on the same physical model the meter simulators read."""
