"""Trust for releases: TUF keys made from Chargeward signers, and the k-of-n approval rules.

The OCPP 2.0.1 firmware signature (X.509) is made by :mod:`chargeward.release` when a bundle is
built; this package adds the second layer, the threshold-signed TUF ``targets`` metadata.
"""
