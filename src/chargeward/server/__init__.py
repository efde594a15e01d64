"""The management server (CSMS): OCPP 2.0.1 listener, REST API, downloads, storage.

Sub-packages by job, each importing only the ones below it (docs/adr/0029-server-sub-packages.md,
tests/unit/test_import_contracts.py): ``common`` < ``store`` < ``auth`` < ``fleet`` < ``rollout``
< ``stations`` < ``cluster`` < :mod:`~chargeward.server.state` < ``http`` <
:mod:`~chargeward.server.runtime`.
"""
