"""Release bundles: firmware images, their manifest and the OCPP firmware signature.

* :mod:`chargeward.release.bundle` - ``build_bundle``, ``verify_bundle``, ``read_manifest``
  and the types they return (start here);
* :mod:`chargeward.release.manifest` - the ``manifest.json`` format;
* :mod:`chargeward.release.image` - the CWFW image envelope;
* :mod:`chargeward.release.archive` - the tar container, read defensively.
"""
