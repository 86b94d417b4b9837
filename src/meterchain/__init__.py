"""meterchain: smart meters that trade energy with their neighbours on an EVM chain."""

__version__ = "0.1.0"
