"""Supply chain: component lists, SBOMs, the vulnerability gate, provenance and rebuild checks."""
