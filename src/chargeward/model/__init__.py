"""Pure data types shared across Chargeward (no I/O, no cryptography)."""
