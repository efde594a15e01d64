"""Release bundles: firmware images, their manifest and the OCPP firmware signature."""
