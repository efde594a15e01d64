"""OCPP 2.0.1 adapters: thin translations between the ``ocpp`` package and our services.

``csms`` is the management-server side, ``station`` the charger side; ``base`` hardens the
``ocpp`` package's message loop against malformed frames.
"""
