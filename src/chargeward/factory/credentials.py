"""Per-charger credentials from the CSPRNG (``secrets``), never a shared default.

UK Smart Charge Points Regulations 2021 Sch.1 para 2 and ETSI EN 303 645 provisions 5.1-1
and 5.1-2: each charger gets its own random passwords, long enough to resist automated
attacks.  Passwords use an alphabet without look-alike characters (no ``0 O o 1 l I``) since
they are printed on labels and typed by people.

================  ==============  ======  ===============================================
credential        alphabet        length  entropy
================  ==============  ======  ===============================================
BasicAuthPassword 56 unambiguous  24      139.4 bits (OCPP 2.0.1: 16-40 printable ASCII)
web UI password   56 unambiguous  20      116.1 bits
access point      56 unambiguous  20      116.1 bits (WPA2 passphrase: 8-63 characters)
PUK               10 digits       12      39.9 bits (typed on the charger itself only)
================  ==============  ======  ===============================================

    >>> creds = generate_credentials()
    >>> len(creds.basic_auth_password), len(creds.puk or "")
    (24, 12)
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from chargeward.agent.credentials import Credentials

UNAMBIGUOUS = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz"  # 56 symbols
DIGITS = "0123456789"


@dataclass(frozen=True)
class Policy:
    """How one credential is generated."""

    name: str
    alphabet: str
    length: int

    @property
    def entropy_bits(self) -> float:
        return self.length * math.log2(len(set(self.alphabet)))

    def generate(self) -> str:
        return "".join(secrets.choice(self.alphabet) for _ in range(self.length))


BASIC_AUTH_PASSWORD = Policy("BasicAuthPassword", UNAMBIGUOUS, 24)
WEB_UI_PASSWORD = Policy("web UI password", UNAMBIGUOUS, 20)
AP_PASSWORD = Policy("access-point password", UNAMBIGUOUS, 20)
PUK = Policy("PUK", DIGITS, 12)
POLICIES = (BASIC_AUTH_PASSWORD, WEB_UI_PASSWORD, AP_PASSWORD, PUK)


def generate_credentials() -> Credentials:
    """Fresh, independent credentials for one charger (the device key is added later)."""
    return Credentials(
        basic_auth_password=BASIC_AUTH_PASSWORD.generate(),
        web_ui_password=WEB_UI_PASSWORD.generate(),
        puk=PUK.generate(),
        ap_password=AP_PASSWORD.generate(),
    )
