"""Publishing: the TUF image repository the server serves at ``/tuf/``."""

from chargeward.publish.expiry import ExpiryPolicy
from chargeward.publish.repository import ImageRepository, OnlineSigners, RoleStatus

__all__ = ["ExpiryPolicy", "ImageRepository", "OnlineSigners", "RoleStatus"]
