"""Simulated meters: one physical model, served over every protocol."""
