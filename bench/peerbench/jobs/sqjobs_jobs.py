"""The bodies as sqjobs jobs, on the ``default`` queue (the config the runner writes names this module)."""

from sqjobs import job

from .. import bodies

cpu = job(queue="default", name="peerbench.cpu")(bodies.cpu)
io = job(queue="default", name="peerbench.io")(bodies.io)
aio = job(queue="default", name="peerbench.aio")(bodies.aio)
pickup = job(queue="default", name="peerbench.pickup")(bodies.pickup)
noop = job(queue="default", name="peerbench.noop")(bodies.noop)
