"""The OCPP side: the CSMS listener, station reports and their group commit, certificates, security
profiles, station import, logs, TLS.
"""
