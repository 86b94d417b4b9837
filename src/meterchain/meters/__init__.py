"""Meter drivers behind one interface, and simulators that speak each protocol."""
