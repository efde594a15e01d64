"""Publishing: the TUF image repository the server serves at ``/tuf/``."""

from chargeward.publish.repository import (
    ExpiryPolicy,
    ImageRepository,
    OnlineSigners,
    RoleStatus,
)

__all__ = ["ExpiryPolicy", "ImageRepository", "OnlineSigners", "RoleStatus"]
