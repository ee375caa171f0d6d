"""The bodies as Huey tasks, on SQLite (a file in the run's folder) or Redis, as PEERBENCH_HUEY says.

Huey refuses ``async def`` tasks, so there is no ``aio`` here.
"""

import os

from huey import RedisHuey, SqliteHuey

from .. import bodies
from ..settings import ENV_DIR, ENV_HUEY, ENV_REDIS, redis_address

if os.environ.get(ENV_HUEY) == "redis":
    _host, _, _db = (os.environ.get(ENV_REDIS) or redis_address()).partition("/")
    huey = RedisHuey("peerbench", host=_host.partition(":")[0], port=int(_host.partition(":")[2]), db=int(_db))
else:
    huey = SqliteHuey("peerbench", filename=os.path.join(os.environ.get(ENV_DIR, "."), "huey.db"))

cpu = huey.task(name="cpu")(bodies.cpu)
io = huey.task(name="io")(bodies.io)
pickup = huey.task(name="pickup")(bodies.pickup)
noop = huey.task(name="noop")(bodies.noop)
