"""SQS cost and speed: requests per job, and jobs/s next to a raw boto3 batch loop.

Starts moto's SQS server on 127.0.0.1, then:

1. sqjobs: 2 worker processes (long polling, prefetch 10) wait on an empty
   queue; 1,000 no-op jobs are sent in one bulk send and drained. Every
   HTTP request of the producer and the workers is counted with a botocore
   ``before-send`` hook; queue creation (once per process) is left out, the
   rest is the steady state. The floor is 0.3 requests per job (one batch
   send, one receive and one batch delete per 10 jobs); the target is <= 0.35
   (issue "Throughput and concurrency"), with ``--threads N`` when the
   installed Worker takes ``threads`` (it says so when it does not).
2. raw boto3: the same 1,000 messages through send_message_batch, and 2
   consumer processes doing receive_message (10) + delete_message_batch.
3. an idle worker: its requests over one minute, and how long it takes to
   leave after SIGTERM (goal: <= 3 requests a minute per queue, <= 2 s).

    python bench/bench_sqs.py [--jobs 1000] [--workers 2] [--threads 8] [--no-idle]
"""

from __future__ import annotations

import argparse
import inspect
import logging
import multiprocessing
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_jobs  # noqa: E402
import boto3  # noqa: E402

import sqjobs  # noqa: E402
from sqjobs.brokers.sqs import SQSBroker  # noqa: E402
from sqjobs.message import JobMessage, encode  # noqa: E402
from sqjobs.worker.loop import Worker  # noqa: E402

REGION = "us-east-1"
ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
#: Operations that happen once per process, not per job.
SETUP_OPERATIONS = ("CreateQueue", "GetQueueUrl")
#: How long the idle worker is watched: a minute, three 20 s long polls.
IDLE_WATCH_S = 60.0
#: Requests per job the issue "Throughput and concurrency" asks for at most.
TARGET_REQUESTS_PER_JOB = 0.35
#: Deadline for a drain before the benchmark gives up.
DRAIN_DEADLINE_S = 120.0

_fork = multiprocessing.get_context("fork")
#: Requests by operation name.
Counter_t = dict


def start_moto(folder: Path) -> tuple[subprocess.Popen, str]:
    """Start moto's server on a free loopback port; return the process and its URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(folder / "moto.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return process, url
        except urllib.error.HTTPError:
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"moto server did not start; see {folder / 'moto.log'}")


def broker_options(endpoint_url: str, prefix: str) -> dict[str, Any]:
    """SQSBroker options for the bench server."""
    return {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION,
            "endpoint_url": endpoint_url, "queue_prefix": prefix}


def raw_client(endpoint_url: str, counter: dict[str, int] | None = None) -> Any:
    """A plain boto3 SQS client; with ``counter``, requests are counted in it by operation."""
    client = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint_url,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    if counter is not None:
        def count(event_name: str = "", **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            counter[operation] = counter.get(operation, 0) + 1

        client.meta.events.register("before-send.sqs", count)
    return client


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until true; give up after DRAIN_DEADLINE_S."""
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.1)  # each look costs the server a scan of the queue: not too often


def worker_takes_threads() -> bool:
    """True when the installed Worker takes a ``threads`` argument."""
    return "threads" in inspect.signature(Worker).parameters


def _worker_process(options: dict[str, Any], queue: str, results: Any, threads: int = 0) -> None:
    """A worker process: consume ``queue`` until SIGTERM, then report its requests."""
    logging.basicConfig(level=logging.WARNING)
    broker = SQSBroker(**options)
    more = {"threads": threads} if threads else {}
    worker = Worker(broker, [queue], prefetch=10, visibility_timeout_s=60, **more)
    setup = dict(broker.requests)
    worker.install_signal_handlers()
    worker.run()
    results.put((setup, dict(broker.requests), worker.jobs_done))


def _empty(observer: SQSBroker, queue: str) -> bool:
    stats = observer.stats(queue)
    return stats.visible == 0 and stats.in_flight == 0


def _collect(processes: list, results: Any) -> list:
    for process in processes:
        process.terminate()  # SIGTERM: the worker's graceful stop
    reports = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
    return reports


def sqjobs_run(endpoint_url: str, jobs: int, workers: int, threads: int = 0) -> tuple[float, float, Counter_t, int]:
    """Return (jobs/s, enqueue jobs/s, steady-state requests by operation, job runs) through sqjobs."""
    options = broker_options(endpoint_url, "bench-sqjobs-")
    producer = SQSBroker(**options)
    observer = SQSBroker(**options)
    producer.ensure_queue("bench")
    setup = dict(producer.requests)
    results = _fork.Queue()
    processes = [_fork.Process(target=_worker_process, args=(options, "bench", results, threads))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    time.sleep(1.0)  # let the workers reach their long poll: the bench measures the steady state
    started = time.perf_counter()
    sqjobs.current_app().with_broker(producer).producer.send_many(bench_jobs.noop.job_class,
                                                                  ((i,) for i in range(jobs)), queue="bench")
    enqueued = time.perf_counter() - started
    wait_for(lambda: _empty(observer, "bench"), "the sqjobs drain")
    elapsed = time.perf_counter() - started
    reports = _collect(processes, results)
    requests: Counter_t = {}
    for before, after in [(setup, dict(producer.requests))] + [(r[0], r[1]) for r in reports]:
        for operation, count in after.items():
            if operation not in SETUP_OPERATIONS:
                requests[operation] = requests.get(operation, 0) + count - before.get(operation, 0)
    return jobs / elapsed, jobs / enqueued, requests, sum(r[2] for r in reports)


def _raw_consumer(endpoint_url: str, url: str, stop: Any, results: Any) -> None:
    counter: dict[str, int] = {}
    client = raw_client(endpoint_url, counter)
    done = 0
    while not stop.is_set():
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          VisibilityTimeout=60).get("Messages", [])
        if messages:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
            done += len(messages)
    results.put((counter, done))


def raw_run(endpoint_url: str, jobs: int, workers: int) -> tuple[float, float, Counter_t]:
    """Return (messages/s, send messages/s, requests by operation) for a bare boto3 batch loop."""
    counter: dict[str, int] = {}
    client = raw_client(endpoint_url, counter)
    url = client.create_queue(QueueName="bench-raw")["QueueUrl"]
    observer = raw_client(endpoint_url)

    def empty() -> bool:
        values = observer.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(values["ApproximateNumberOfMessages"]) + int(values["ApproximateNumberOfMessagesNotVisible"]) == 0

    stop, results = _fork.Event(), _fork.Queue()
    processes = [_fork.Process(target=_raw_consumer, args=(endpoint_url, url, stop, results))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    time.sleep(1.0)
    body = encode(JobMessage(name=bench_jobs.noop.job_class.name, args=[0]))  # the size sqjobs sends
    started = time.perf_counter()
    for start in range(0, jobs, 10):
        client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": body} for i in range(start, min(start + 10, jobs))])
    enqueued = time.perf_counter() - started
    wait_for(empty, "the raw drain")
    elapsed = time.perf_counter() - started
    stop.set()
    reports = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
    for report, _ in reports:
        for operation, count in report.items():
            counter[operation] = counter.get(operation, 0) + count
    counter.pop("CreateQueue", None)
    return jobs / elapsed, jobs / enqueued, counter


def idle_run(endpoint_url: str) -> tuple[int, float]:
    """Return (requests of an idle worker over IDLE_WATCH_S, seconds from SIGTERM to its exit)."""
    options = broker_options(endpoint_url, "bench-idle-")
    results = _fork.Queue()
    process = _fork.Process(target=_worker_process, args=(options, "idle", results))
    process.start()
    time.sleep(IDLE_WATCH_S)
    signalled = time.perf_counter()
    process.terminate()  # SIGTERM
    setup, requests, _ = results.get(timeout=60)
    process.join()
    exit_s = time.perf_counter() - signalled
    idle = sum(count - setup.get(operation, 0) for operation, count in requests.items()
               if operation not in SETUP_OPERATIONS)
    return idle, exit_s


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="Threads per worker (where Worker takes them).")
    parser.add_argument("--no-idle", action="store_true", help="Skip the one-minute idle-worker measurement.")
    options = parser.parse_args()
    threads = options.threads if worker_takes_threads() else 0
    with tempfile.TemporaryDirectory() as folder:
        server, endpoint_url = start_moto(Path(folder))
        try:
            speed, send_speed, requests, ran = sqjobs_run(endpoint_url, options.jobs, options.workers, threads)
            raw_speed, raw_send_speed, raw_requests = raw_run(endpoint_url, options.jobs, options.workers)
            idle = None if options.no_idle else idle_run(endpoint_url)
        finally:
            server.terminate()
            server.wait()
    per_job = sum(requests.values()) / options.jobs
    raw_per_job = sum(raw_requests.values()) / options.jobs
    verdict = "within target" if per_job <= TARGET_REQUESTS_PER_JOB else "OVER TARGET"
    print(f"SQS (moto server on 127.0.0.1), {options.jobs} no-op jobs, {options.workers} worker processes; "
          f"{ran} job runs")
    if options.threads:
        print(f"worker threads: {threads}" if threads else "worker threads: n/a (Worker takes no threads yet)")
    print(f"requests per job at steady state: {per_job:.3f}  "
          f"(floor 0.300, target <= {TARGET_REQUESTS_PER_JOB:.3f}: {verdict})")
    print("  sqjobs:    " + ", ".join(f"{op} {n}" for op, n in sorted(requests.items())))
    print(f"  raw boto3: {raw_per_job:.3f} per job: "
          + ", ".join(f"{op} {n}" for op, n in sorted(raw_requests.items())))
    print(f"{'':28}{'sqjobs':>10}{'raw boto3':>12}{'ratio':>8}")
    print(f"{'enqueue (jobs/s)':28}{send_speed:>10.0f}{raw_send_speed:>12.0f}{send_speed / raw_send_speed:>8.2f}")
    print(f"{'enqueue + drain (jobs/s)':28}{speed:>10.0f}{raw_speed:>12.0f}{speed / raw_speed:>8.2f}")
    print("  (jobs/s measure moto, a Python emulator, on a shared machine: they are noisy; request counts are exact)")
    if idle is not None:
        idle_requests, exit_s = idle
        print(f"idle worker on one queue: {idle_requests} request(s) in {IDLE_WATCH_S:.0f} s "
              f"(goal <= 3 a minute); "
              f"left {exit_s:.2f} s after SIGTERM (goal <= 2 s)")


if __name__ == "__main__":
    main()
