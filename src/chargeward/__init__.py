"""Chargeward: a secure firmware-update pipeline for EV charger fleets.

The public surface is the ``chargeward`` command line; modules below are
documented where they are meant to be used from other code.
"""

__version__ = "0.1.0"
