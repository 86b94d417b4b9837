"""Devices a board switches: relays (through the meter), batteries and inverters."""
