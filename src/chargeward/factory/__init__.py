"""Factory provisioning: unique credentials, device certificates and trust anchors per charger.

:mod:`chargeward.factory.credentials` generates the secrets, :mod:`.provisioning` writes one
charger's state directory (or a batch of them) and returns only what may leave the factory:
public data and password hashes.  ``chargeward factory provision`` drives it.
"""
