"""The bodies as Celery tasks on a Redis broker, with no result backend (Celery's default).

Celery does not await ``async def`` tasks, so there is no ``aio`` here.
"""

import os

from celery import Celery

from .. import bodies
from ..settings import ENV_REDIS, redis_address, redis_url

app = Celery("peerbench", broker=redis_url(os.environ.get(ENV_REDIS) or redis_address()))

cpu = app.task(name="cpu")(bodies.cpu)
io = app.task(name="io")(bodies.io)
pickup = app.task(name="pickup")(bodies.pickup)
noop = app.task(name="noop")(bodies.noop)
