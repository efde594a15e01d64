"""The reference charger agent: verify, install into the inactive A/B slot, reboot, commit."""
