"""Planning arithmetic: deployments, engine budget policies and the estimate."""

from .deployment import Deployment, pp_partition
from .estimate import Estimate, estimate

__all__ = ["Deployment", "Estimate", "estimate", "pp_partition"]
