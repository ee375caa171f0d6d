"""The bodies as Dramatiq actors on a Redis broker (the database the runner names).

For the async case the AsyncIO middleware is added, which Dramatiq needs to
run ``async def`` actors; the other cases run with the default middleware.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from .. import bodies
from ..settings import ENV_CASE, ENV_REDIS, redis_address, redis_url

broker = RedisBroker(url=redis_url(os.environ.get(ENV_REDIS) or redis_address()))
if os.environ.get(ENV_CASE) == "async":
    from dramatiq.middleware.asyncio import AsyncIO

    broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)

cpu = dramatiq.actor(actor_name="cpu")(bodies.cpu)
io = dramatiq.actor(actor_name="io")(bodies.io)
aio = dramatiq.actor(actor_name="aio")(bodies.aio)
pickup = dramatiq.actor(actor_name="pickup")(bodies.pickup)
noop = dramatiq.actor(actor_name="noop")(bodies.noop)
