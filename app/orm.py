"""The service's tables. They live in `workers/orm.py`: the workers own the job store and, by the
house rule (app -> workers -> models), must not import `app`. Re-exported here for the API side."""

from workers.orm import *  # noqa: F403
from workers.orm import __all__  # noqa: F401
