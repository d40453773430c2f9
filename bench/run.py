"""Measure staging throughput, memory, the no-change run and promotion (issue 6).

Run ``.venv/bin/python bench/run.py [--size-gib 1] [--quick]``. It serves packages
from a file on a local HTTP server, starts a fresh in-memory Azurite for every
measurement (Azurite never gives memory back), runs the product's scripts in child
processes and prints one table. Exit codes: 0 every target met, 1 a target missed,
2 the benchmark could not run.

Throughputs are the best of ``--repeat`` interleaved runs on each side: other work
on a small machine only ever slows a run down. The staging target is judged from
1 GiB up; a smaller package cannot amortise the fixed cost of a run, which the
table shows apart. Azurite gets a CPU of its own (``--no-pin-azurite`` to share), as
if storage were another machine, as Azure is: on two cores the emulator alone needs
more than one while receiving, and would otherwise be measured against the product.

Peak memory is the child's own ``VmHWM``, read inside the child: ``ru_maxrss`` of a
child started by ``subprocess`` also counts the parent's pages at the time of the
``vfork`` and would report this process's package buffer as the product's memory.
Bytes through a child are counted on its sockets, as ``/proc/net/dev`` also counts
other traffic on the loopback interface.
"""

import argparse
import base64
import hashlib
import json
import os
import platform
import plistlib
import re
import resource
import runpy
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m365_update_manager.errors import M365Error
from m365_update_manager.settings import load_settings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.azurite import Azurite, find_azurite  # noqa: E402  # needs ROOT on sys.path, set above
from tests.support.cdn import CDN, CDNHandler  # noqa: E402  # needs ROOT on sys.path, set above

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MB = 1_000_000
CHANNEL = "C1297A47-86C4-4C1F-97FA-950631F94777"  # the "current" channel
FEED_DIR = f"/mro1cdnstorage/{CHANNEL}/MacAutoupdate"
BENCH_APP, BENCH_ID = "bench", "BENCH01"
CONTAINER = "bench"
SEED = b"m365-update-manager benchmark"
PACKAGE_FILE = Path(tempfile.gettempdir()) / "m365-bench-package.bin"

THROUGHPUT_RATIO = 0.9
RSS_LIMIT = 192 * MIB
RSS_GROWTH = 1.10
NO_CHANGE_BYTES_PER_APP = 8 * KIB
NO_CHANGE_SECONDS = 3.0
PROMOTE_SECONDS = 5.0
PROMOTE_BYTES_SHARE = 0.01


class BenchError(Exception):
    """The benchmark itself could not run: a tool is missing or a setup run failed."""


@dataclass(frozen=True)
class Plan:
    """The sizes and repetitions of one benchmark run."""

    main: int
    memory_small: int
    memory_large: int
    catalog_each: int
    repeat: int
    pin: bool


@dataclass(frozen=True)
class Row:
    """One line of the result table; ``ok`` is None for a figure shown for context."""

    figure: str
    product: str
    reference: str
    ratio: float | None
    target: str
    ok: bool | None


@dataclass
class Results:
    """The table's rows and the notes printed under it."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChildRun:
    """One product script run in a child process, as the child measured it."""

    code: int
    main_seconds: float
    user_seconds: float
    system_seconds: float
    wall_seconds: float
    peak_rss: int
    received: int
    sent: int


@dataclass(frozen=True)
class Feed:
    """The one-app feed served for a staging measurement."""

    version: str
    package: str


@dataclass
class Traffic:
    """Bytes the local CDN moved besides response bodies."""

    request_bytes: int = 0
    header_bytes: int = 0


# The local CDN


class DiskHandler(CDNHandler):
    """The test CDN's handler, serving big packages from a file with ``sendfile``."""

    disk: dict[str, tuple[Path, int]]
    traffic: Traffic
    # http.server writes headers and body in two sends: with Nagle on, each small
    # answer on a kept-alive connection waits ~40 ms for a delayed ACK, which no
    # CDN does and which would add 40 ms per feed request to the product's time.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802  # http.server's name
        """Answer one GET: a package from disk, else whatever the test CDN holds."""
        with self.state.lock:
            self.traffic.request_bytes += self._request_size()
        path = self.path.split("?", 1)[0]
        source = self.disk.get(path)
        if source is None:
            super().do_GET()
            return
        with self.state.lock:
            self.state.requests.append(path)
            self.state.headers.append(dict(self.headers.items()))
        self._send_disk(*source)

    def flush_headers(self) -> None:
        """Count the status line and headers, then send them."""
        buffered: list[bytes] = getattr(self, "_headers_buffer", [])
        with self.state.lock:
            self.traffic.header_bytes += sum(len(line) for line in buffered)
        super().flush_headers()

    def _request_size(self) -> int:
        lines = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        return len(self.requestline) + 2 + lines + 2

    def _send_disk(self, file: Path, length: int) -> None:
        start, status = 0, 200
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if match and int(match.group(1)) < length:
            start, status = int(match.group(1)), 206
        self.send_response(status)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{length - 1}/{length}")
        self.end_headers()
        with file.open("rb") as handle:
            self._sendfile(handle.fileno(), start, length)

    def _sendfile(self, source: int, offset: int, end: int) -> None:
        out = self.connection.fileno()
        while offset < end:
            try:
                sent = os.sendfile(out, source, offset, min(end - offset, 64 * MIB))
            except (BrokenPipeError, ConnectionResetError):
                return
            if sent == 0:
                return
            offset += sent
            with self.state.lock:
                self.state.bytes_sent += sent


class LocalCDN:
    """The test CDN on 127.0.0.1, with packages served from one file on disk."""

    def __init__(self, package_file: Path) -> None:
        self.cdn = CDN()
        self.package_file = package_file
        self.disk: dict[str, tuple[Path, int]] = {}
        self.traffic = Traffic()
        handler = type(
            "BenchHandler",
            (DiskHandler,),
            {"state": self.cdn.state, "disk": self.disk, "traffic": self.traffic},
        )
        self.cdn.server.RequestHandlerClass = handler

    def serve_package(self, path: str, size: int) -> None:
        """Serve the first ``size`` bytes of the package file at ``path``."""
        self.disk[path] = (self.package_file, size)

    def reset(self) -> None:
        """Forget the requests and bytes seen so far."""
        self.cdn.reset_counters()
        with self.cdn.state.lock:
            self.traffic.request_bytes = self.traffic.header_bytes = 0

    def requests(self) -> list[str]:
        """Return the paths requested since the last reset."""
        with self.cdn.state.lock:
            return list(self.cdn.state.requests)

    def wire_bytes(self) -> int:
        """Return every byte seen since the last reset: requests, headers, bodies."""
        with self.cdn.state.lock:
            state, traffic = self.cdn.state, self.traffic
            return state.bytes_sent + traffic.header_bytes + traffic.request_bytes


@dataclass
class Bench:
    """What every measurement shares: the CDN, Azurite, a work folder, settings."""

    cdn: LocalCDN
    azurite_command: str
    curl: str
    work: Path
    block_size: int
    concurrency: int
    azurite_cpus: set[int] = field(default_factory=set)
    started: int = 0

    @contextmanager
    def azurite(self) -> Iterator[Azurite]:
        """Start a fresh in-memory Azurite and stop it afterwards."""
        self.started += 1
        log = self.work / f"azurite-{self.started:02d}.log"
        server = Azurite(self.azurite_command, log)
        if self.azurite_cpus:
            pin_process(server.process.pid, self.azurite_cpus)
        try:
            yield server
        finally:
            server.stop()

    def folder(self, name: str) -> Path:
        """Return a new, empty folder for one product run."""
        self.started += 1
        path = self.work / f"{self.started:02d}-{name}"
        path.mkdir()
        return path

    def env(self, azurite: Azurite, folder: Path, **extra: str) -> dict[str, str]:
        """Return the environment of a product run against the CDN and ``azurite``."""
        own = ("M365_", "AZURE_", "GITHUB_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        env |= {
            "M365_ALLOWED_HOSTS": "127.0.0.1",
            "M365_FEED_BASE_URL": self.cdn.cdn.url("/mro1cdnstorage"),
            "M365_MANIFEST": str(folder / "manifest.json"),
            "M365_BLOCK_SIZE": str(self.block_size),
            "M365_UPLOAD_CONCURRENCY": str(self.concurrency),
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
            "AZURE_STORAGE_CONTAINER": CONTAINER,
        }
        return env | extra


# The product in a child process


class SocketCounter:
    """Counts the bytes this process receives and sends on its sockets."""

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.lock = threading.Lock()

    def install(self) -> None:
        """Wrap the two ``socket.socket`` methods http.client moves bodies with."""
        recv_into, sendall = socket.socket.recv_into, socket.socket.sendall

        def counted_recv_into(
            sock: Any, buffer: "WriteableBuffer", nbytes: int = 0, flags: int = 0
        ) -> int:
            size = recv_into(sock, buffer, nbytes, flags)
            with self.lock:
                self.received += size
            return size

        def counted_sendall(sock: Any, data: "ReadableBuffer", flags: int = 0) -> None:
            sendall(sock, data, flags)
            with self.lock:
                self.sent += memoryview(data).nbytes

        socket.socket.recv_into = counted_recv_into  # type: ignore[method-assign,assignment]  # wrapped to count
        socket.socket.sendall = counted_sendall  # type: ignore[method-assign]  # wrapped to count


def run_child(argv: Sequence[str]) -> int:
    """Child side: time a product script's ``main()``; record peak RSS and socket bytes."""
    result, script, *args = argv
    namespace = runpy.run_path(script, run_name="bench_child")
    main: Callable[[list[str]], int] = namespace["main"]
    counter = SocketCounter()
    counter.install()

    start = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - start

    usage = resource.getrusage(resource.RUSAGE_SELF)
    record = {
        "code": code,
        "main_seconds": seconds,
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "peak_rss": _own_peak_rss(),
        "received": counter.received,
        "sent": counter.sent,
    }
    Path(result).write_text(json.dumps(record))
    return code


def _own_peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M)
    if match is None:
        raise BenchError("no VmHWM in /proc/self/status: the benchmark needs Linux")
    return int(match.group(1)) * KIB


def run_product(
    script: str, args: Sequence[str], env: dict[str, str], folder: Path
) -> ChildRun:
    """Run ``script`` (check_updates.py or promote.py) in a child; raise if it fails."""
    result, log = folder / f"{script}.json", folder / f"{script}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(result)]
    command += [str(ROOT / script), *args]

    start = time.perf_counter()
    with log.open("w") as output:
        completed = subprocess.run(
            command, env=env, cwd=folder, stdout=output, stderr=output, check=False
        )
    wall = time.perf_counter() - start

    if completed.returncode != 0 or not result.exists():
        tail = log.read_text()[-3000:]
        raise BenchError(
            f"{script} {' '.join(args)} exited {completed.returncode}:\n{tail}"
        )
    return ChildRun(wall_seconds=wall, **json.loads(result.read_text()))


def read_apps(folder: Path) -> dict[str, dict[str, Any]]:
    """Return the ``apps`` table of the manifest a product run wrote."""
    apps: dict[str, dict[str, Any]] = json.loads(
        (folder / "manifest.json").read_text()
    )["apps"]
    return apps


# The package file and the feeds


def ensure_package_file(path: Path, size: int) -> None:
    """Write ``size`` deterministic bytes to ``path`` unless it holds as many already."""
    if path.exists() and path.stat().st_size >= size:
        return
    block = hashlib.shake_256(SEED).digest(8 * MIB)
    with path.open("wb") as handle:
        for offset in range(0, size, len(block)):
            handle.write(block[: size - offset])


def file_sha256(path: Path, size: int) -> str:
    """Return the SHA-256 of the first ``size`` bytes of ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        remaining = size
        while remaining:
            chunk = handle.read(min(remaining, 8 * MIB))
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def publish_bench_feed(cdn: LocalCDN, size: int) -> Feed:
    """Serve a one-app MAU feed whose full package is ``size`` bytes."""
    version = f"16.99.{size // KIB}"
    feed = Feed(version, f"{FEED_DIR}/Bench_{version}_Updater.pkg")
    cdn.serve_package(feed.package, size)
    entry = {
        "Application ID": BENCH_ID,
        "Title": f"Bench {version}",
        "Update Version": version,
        "Location": cdn.cdn.url(feed.package),
        "FullUpdaterSize": size // KIB,
    }
    cdn.cdn.add(f"{FEED_DIR}/0409{BENCH_ID}.xml", plistlib.dumps([entry]))
    chk = plistlib.dumps({"Update Version": version})
    cdn.cdn.add(f"{FEED_DIR}/0409{BENCH_ID}-chk.xml", chk)
    return feed


def publish_catalog_feeds(cdn: LocalCDN, each: int) -> dict[str, int]:
    """Serve the fixture feeds of the default catalog; return each app's package size."""
    from m365_update_manager.catalog import DEFAULT_APPS
    from m365_update_manager.feed import parse_manifest
    from tests.conftest import FEEDS, REAL_HOSTS

    local = cdn.cdn.base.encode()
    for path in sorted(FEEDS.glob("*.xml")):
        data = REAL_HOSTS.sub(lambda m: local + b"/" + m.group(1), path.read_bytes())
        cdn.cdn.add(f"{FEED_DIR}/{path.name}", data)

    sizes = {}
    apps = [app for app in DEFAULT_APPS if not app.on_demand]
    for index, app in enumerate(apps):
        manifest = cdn.cdn.state.files[f"{FEED_DIR}/0409{app.app_id}.xml"]
        url = parse_manifest(manifest, app.name).url
        sizes[app.name] = each + index * 4 * KIB  # distinct sizes, distinct hashes
        cdn.serve_package(url.removeprefix(cdn.cdn.base), sizes[app.name])
    return sizes


# The stages measured alone


def time_curl(curl: str, url: str, size: int) -> float:
    """Return the seconds ``curl -o /dev/null`` takes to download ``url``."""
    written = "%{time_total} %{size_download}"
    command = [curl, "-sS", "--fail", "-o", "/dev/null", "-w", written, url]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise BenchError(f"curl {url} failed: {completed.stderr.strip()}")
    seconds, received = completed.stdout.split()
    if int(received) != size:
        raise BenchError(f"curl received {received} of {size} bytes from {url}")
    return float(seconds)


def time_sha256(data: bytes, chunk: int) -> float:
    """Return the seconds hashlib takes to hash ``data``, ``chunk`` bytes at a time."""
    view = memoryview(data)
    digest = hashlib.sha256()
    start = time.perf_counter()
    for offset in range(0, len(view), chunk):
        digest.update(view[offset : offset + chunk])
    return time.perf_counter() - start


def time_upload(connection_string: str, data: bytes, block: int, workers: int) -> float:
    """Return the seconds staging and committing ``data`` takes, as the writer does."""
    from azure.storage.blob import BlobBlock, BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        connection_string, connection_timeout=20, read_timeout=120
    )
    container = service.get_container_client("reference")
    container.create_container()
    blob = container.get_blob_client("reference.bin")
    window = threading.BoundedSemaphore(workers + 1)  # AzureBlobWriter's window

    def stage(block_id: str, chunk: bytes) -> None:
        try:
            blob.stage_block(block_id, chunk, length=len(chunk))
        finally:
            window.release()

    ids: list[str] = []
    futures: list[Future[None]] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for offset in range(0, len(data), block):
            window.acquire()
            ids.append(base64.b64encode(f"ref-{len(ids):06d}".encode()).decode())
            futures.append(pool.submit(stage, ids[-1], data[offset : offset + block]))
        for future in futures:
            future.result()
    blob.commit_block_list([BlobBlock(block_id) for block_id in ids])
    seconds = time.perf_counter() - start

    if blob.get_blob_properties().size != len(data):
        raise BenchError("the reference upload did not arrive whole")
    return seconds


def measure_stages(bench: Bench, size: int) -> dict[str, float]:
    """Return the throughput (bytes/s) of download, hashing and upload, each alone."""
    feed = publish_bench_feed(bench.cdn, size)
    download = time_curl(bench.curl, bench.cdn.cdn.url(feed.package), size)

    with bench.cdn.package_file.open("rb") as handle:
        data = handle.read(size)
    hashing = time_sha256(data, bench.block_size)  # Transfer reads a block at a time
    with bench.azurite() as azurite:
        upload = time_upload(
            azurite.connection_string, data, bench.block_size, bench.concurrency
        )
    return {
        "download (curl)": size / download,
        "SHA-256 (hashlib)": size / hashing,
        f"upload (SDK, {_size(bench.block_size)} x {bench.concurrency})": size / upload,
    }


# The product's runs


def stage_package(bench: Bench, size: int) -> ChildRun:
    """Stage one package of ``size`` bytes with check_updates.py into a fresh Azurite."""
    feed = publish_bench_feed(bench.cdn, size)
    folder = bench.folder(f"stage-{size // MIB}MiB")
    catalog = folder / "catalog.toml"
    catalog.write_text(f'[apps.{BENCH_APP}]\napp_id = "{BENCH_ID}"\nname = "Bench"\n')

    with bench.azurite() as azurite:
        env = bench.env(azurite, folder, M365_CATALOG=str(catalog))
        run = run_product("check_updates.py", ["--app", BENCH_APP], env, folder)

    staged = read_apps(folder)[BENCH_APP].get("staged") or {}
    expected = {"version": feed.version, "sha256": file_sha256(PACKAGE_FILE, size)}
    if {key: staged.get(key) for key in expected} != expected:
        raise BenchError(f"staged {staged}, expected {expected}")
    return run


def measure_staging(bench: Bench, plan: Plan, results: Results) -> None:
    """Stage the main package against the stages alone, interleaved, best of each."""
    stages: dict[str, list[float]] = {}
    runs: list[ChildRun] = []
    for _ in range(plan.repeat):
        for name, rate in measure_stages(bench, plan.main).items():
            stages.setdefault(name, []).append(rate)
        runs.append(stage_package(bench, plan.main))
    fixed = stage_package(bench, MIB).main_seconds

    results.rows += _staging_rows(plan, stages, runs, fixed)
    results.rows.append(_traffic_row(runs[-1], plan.main))
    peak = max(run.peak_rss for run in runs)
    figure = f"staging peak RSS, {_size(plan.main)}"
    results.rows.append(_below(figure, peak, RSS_LIMIT, _mib))

    rates = [plan.main / run.main_seconds for run in runs]
    results.notes.append(_runs_note("staging, check_updates.py main()", rates))
    results.notes += [_runs_note(name, values) for name, values in stages.items()]
    cpu = ", ".join(f"{r.user_seconds:.2f} + {r.system_seconds:.2f} s" for r in runs)
    results.notes.append(f"staging, CPU of check_updates.py (user + system): {cpu}")


def _staging_rows(
    plan: Plan, stages: dict[str, list[float]], runs: list[ChildRun], fixed: float
) -> list[Row]:
    """Return the stages alone, the product against the slowest, and its parts."""
    best = {name: max(values) for name, values in stages.items()}
    slowest = min(best, key=lambda name: best[name])
    reference = f"{_rate(best[slowest])} {slowest.split(' ')[0]}"
    of = f"{_size(plan.main)}, best of {plan.repeat}"
    rows = [
        Row(f"{name} alone, {of}", "-", _rate(rate), None, "-", None)
        for name, rate in best.items()
    ]

    fastest = min(run.main_seconds for run in runs)
    ratio = plan.main / fastest / best[slowest]
    judged = plan.main >= GIB  # a smaller package cannot amortise the fixed cost
    target = f">= {THROUGHPUT_RATIO:.2f}" + ("" if judged else " at 1 GiB+")
    ok = ratio >= THROUGHPUT_RATIO if judged else None
    product = _rate(plan.main / fastest)
    rows.append(Row(f"staging throughput, {of}", product, reference, ratio, target, ok))
    return rows + _cost_rows(plan.main, fastest, fixed, best[slowest], reference)


def _cost_rows(
    size: int, seconds: float, fixed: float, base: float, reference: str
) -> list[Row]:
    """Split a staging run into the fixed cost of a run and the streaming rate."""
    figure = "staging fixed cost: main() with a 1 MiB package"
    rows = [Row(figure, _seconds(fixed), "-", None, "-", None)]
    if seconds <= fixed:
        return rows
    streaming = (size - MIB) / (seconds - fixed)
    figure = "staging streaming rate: main() less the fixed cost"
    rows.append(Row(figure, _rate(streaming), reference, streaming / base, "-", None))
    return rows


def measure_memory(bench: Bench, plan: Plan, results: Results) -> None:
    """Compare the peak RSS of staging a large package with that of a small one."""
    small = stage_package(bench, plan.memory_small)
    large = stage_package(bench, plan.memory_large)
    for size, run in ((plan.memory_small, small), (plan.memory_large, large)):
        results.rows.append(
            _below(f"staging peak RSS, {_size(size)}", run.peak_rss, RSS_LIMIT, _mib)
        )
    ratio = large.peak_rss / small.peak_rss
    results.rows.append(
        Row(
            f"peak RSS, {_size(plan.memory_large)} vs {_size(plan.memory_small)}",
            _mib(large.peak_rss),
            _mib(small.peak_rss),
            ratio,
            f"<= {RSS_GROWTH:.2f}",
            ratio <= RSS_GROWTH,
        )
    )


def measure_catalog(bench: Bench, plan: Plan, results: Results) -> None:
    """Stage the default catalog, then measure a no-change run and a promotion."""
    sizes = publish_catalog_feeds(bench.cdn, plan.catalog_each)
    folder = bench.folder("catalog")
    with bench.azurite() as azurite:
        env = bench.env(azurite, folder)
        run_product("check_updates.py", [], env, folder)
        staged = read_apps(folder)
        measure_no_change(bench, env, folder, results)

        promote_at = datetime.now(UTC) + timedelta(days=15)
        env["M365_NOW"] = promote_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        measure_promotion(bench, env, folder, sizes, results)

    live = read_apps(folder)
    missed = [a for a in sizes if _tier(live, a, "live") != _tier(staged, a, "staged")]
    if missed:
        raise BenchError(f"promote.py did not make the staged build live: {missed}")


def measure_no_change(
    bench: Bench, env: dict[str, str], folder: Path, results: Results
) -> None:
    """Run check_updates.py again with every app up to date."""
    before = (folder / "manifest.json").read_text()
    apps = read_apps(folder)
    with_chk = sum(1 for state in apps.values() if state.get("feed", {}).get("chk"))
    bench.cdn.reset()
    run = run_product("check_updates.py", [], env, folder)
    requests = bench.cdn.requests()
    per_app = bench.cdn.wire_bytes() / len(apps)

    chk = sum(1 for path in requests if path.endswith("-chk.xml"))
    ok = len(requests) == len(apps) and chk == with_chk
    unchanged = (folder / "manifest.json").read_text() == before
    results.rows += [
        Row(
            "no-change: CDN requests",
            f"{len(requests)}, {chk} of them -chk.xml",
            f"{len(apps)} apps, {with_chk} with -chk.xml",
            len(requests) / len(apps),
            "1 per app, -chk.xml if any",
            ok,
        ),
        _below(
            "no-change: CDN bytes per app", per_app, NO_CHANGE_BYTES_PER_APP, _bytes
        ),
        _below(
            "no-change: process wall time",
            run.wall_seconds,
            NO_CHANGE_SECONDS,
            _seconds,
        ),
        Row(
            "no-change: manifest.json untouched",
            "yes" if unchanged else "no",
            "-",
            None,
            "unchanged",
            unchanged,
        ),
    ]
    sockets = (run.received + run.sent) / len(apps)
    results.notes.append(
        f"no-change: main() {run.main_seconds:.2f} s of {run.wall_seconds:.2f} s; "
        f"CDN bytes count requests, headers and bodies; all sockets (CDN and "
        f"storage) {sockets:,.0f} B per app"
    )


def measure_promotion(
    bench: Bench,
    env: dict[str, str],
    folder: Path,
    sizes: dict[str, int],
    results: Results,
) -> None:
    """Promote the whole catalog; count CDN requests and promote.py's socket bytes."""
    total = sum(sizes.values())
    bench.cdn.reset()
    run = run_product("promote.py", [], env, folder)
    requests = len(bench.cdn.requests())
    moved = run.received + run.sent
    share = moved / total

    results.rows += [
        Row("promote: CDN requests", str(requests), "0", None, "0", requests == 0),
        Row(
            "promote: bytes through promote.py, in + out",
            f"{moved / KIB:,.0f} KiB",
            f"{_size(total)} of pkgs",
            share,
            f"< {PROMOTE_BYTES_SHARE:.0%} of pkgs",
            share < PROMOTE_BYTES_SHARE,
        ),
        _below("promote: peak RSS", run.peak_rss, RSS_LIMIT, _mib),
        _below(
            "promote: whole catalog, process wall time",
            run.wall_seconds,
            PROMOTE_SECONDS,
            _seconds,
        ),
    ]


def _tier(apps: dict[str, dict[str, Any]], app: str, tier: str) -> object:
    """Return the version an app's tier holds in a manifest, or None."""
    return (apps.get(app, {}).get(tier) or {}).get("version")


# Formatting


def _size(size: float) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:.4g} MiB"


def _rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / MB:,.0f} MB/s"


def _mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _bytes(value: float) -> str:
    return f"{value:,.0f} B"


def _below(
    figure: str, value: float, limit: float, show: Callable[[float], str]
) -> Row:
    """Return a row that passes when ``value`` stays under ``limit``."""
    return Row(
        figure,
        show(value),
        show(limit),
        value / limit,
        f"< {show(limit)}",
        value < limit,
    )


def _traffic_row(run: ChildRun, size: int) -> Row:
    """Show that staging reads each package byte once and writes it once."""
    moved = max(run.received, run.sent)
    shown = f"in {_size(run.received)}, out {_size(run.sent)}"
    return Row(
        "staging: bytes through check_updates.py",
        shown,
        _size(size),
        moved / size,
        "-",
        None,
    )


def _runs_note(name: str, rates: Sequence[float]) -> str:
    return f"{name}: " + ", ".join(_rate(rate) for rate in rates)


def format_table(rows: Sequence[Row]) -> str:
    """Return the rows as a Markdown table."""
    header = ("figure", "product", "reference", "ratio", "target", "pass/fail")
    cells = [header] + [
        (
            r.figure,
            r.product,
            r.reference,
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.target,
            {True: "pass", False: "FAIL", None: "info"}[r.ok],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def describe_machine() -> str:
    """Return one line naming the CPU, cores, memory and Python version."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text()
    memory = re.search(r"^MemTotal:\s+(\d+) kB$", meminfo, re.M)
    return (
        f"machine: {model.group(1) if model else 'unknown CPU'}, "
        f"{os.cpu_count()} cores, "
        f"{int(memory.group(1)) / MIB if memory else 0:.1f} GiB memory, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def describe_setup(bench: Bench) -> str:
    """Return one line naming the product's transfer settings and the tools' versions."""
    azurite = ROOT / "node_modules" / "azurite" / "package.json"
    version = json.loads(azurite.read_text())["version"] if azurite.exists() else "?"
    curl = subprocess.run(
        [bench.curl, "--version"], capture_output=True, text=True, check=False
    )
    pinned = (
        f", Azurite pinned to CPU {_cpus(bench.azurite_cpus)} and the rest to CPU "
        f"{_cpus(os.sched_getaffinity(0))}"
        if bench.azurite_cpus
        else ""
    )
    return (
        f"setup: M365_BLOCK_SIZE={bench.block_size} "
        f"M365_UPLOAD_CONCURRENCY={bench.concurrency}, Azurite {version} in memory "
        f"(a fresh one per measurement), {' '.join(curl.stdout.split()[:2])}, "
        f"HTTP server and Azurite on 127.0.0.1{pinned}"
    )


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def split_cpus() -> set[int]:
    """Keep this process and its children off the first CPU; return that CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError("--pin-azurite needs at least two CPUs")
    pin_process(os.getpid(), set(cpus[1:]))
    return {cpus[0]}


def pin_process(pid: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of process ``pid``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


# Entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Measure staging, memory, the no-change run and promotion.",
    )
    parser.add_argument(
        "--size-gib",
        type=float,
        default=None,
        help="size of the staged package (default 1, or 0.25 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (64/256 MiB memory pair): about a minute",
    )
    parser.add_argument(
        "--pin-azurite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run Azurite on the first CPU and everything else on the others, "
        "as if storage were another machine (the default; --no-pin-azurite to share)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="throughput runs on each side, best taken (default 3, or 2 with --quick)",
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    """Return the sizes and repetitions of a full or a quick run."""
    if args.quick:
        plan = Plan(256 * MIB, 64 * MIB, 256 * MIB, 4 * MIB, 2, args.pin_azurite)
    else:
        plan = Plan(GIB, 256 * MIB, 2 * GIB, 64 * MIB, 3, args.pin_azurite)
    main = plan.main if args.size_gib is None else round(args.size_gib * GIB)
    repeat = plan.repeat if args.repeat is None else max(1, args.repeat)
    return replace(plan, main=main, repeat=repeat)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print the table; 1 when a target is missed."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--child"]:
        return run_child(arguments[1:])
    plan = make_plan(parse_args(arguments))

    print(describe_machine(), flush=True)
    try:
        results = measure(plan)
    except (BenchError, M365Error) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2

    print(format_table(results.rows))
    print()
    print("\n".join(results.notes))
    return 0 if all(row.ok is not False for row in results.rows) else 1


def measure(plan: Plan) -> Results:
    """Set up the CDN and a work folder, then take every measurement."""
    command, curl = find_azurite(), shutil.which("curl")
    if command is None:
        raise BenchError("azurite-blob is missing: npm install azurite@3.35.0")
    if curl is None:
        raise BenchError("curl is missing: apt-get install -y curl")
    settings = load_settings()
    largest = max(plan.main, plan.memory_large, plan.catalog_each + 64 * KIB)
    ensure_package_file(PACKAGE_FILE, largest)

    cdn = LocalCDN(PACKAGE_FILE)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="m365-bench-") as work:
        bench = Bench(
            cdn,
            command,
            curl,
            Path(work),
            settings.block_size,
            settings.upload_concurrency,
            azurite_cpus=split_cpus() if plan.pin else set(),
        )
        print(describe_setup(bench), flush=True)
        try:
            measure_staging(bench, plan, results)
            measure_memory(bench, plan, results)
            measure_catalog(bench, plan, results)
        finally:
            cdn.cdn.close()
    return results


if __name__ == "__main__":
    sys.exit(main())
