"""The management server (CSMS): OCPP 2.0.1 listener, REST API, downloads, storage."""
