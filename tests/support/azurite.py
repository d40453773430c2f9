"""Start Azurite's blob service on a free loopback port, for tests and the benchmark."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    """Return the connection string of Azurite's well-known development account."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


def find_azurite() -> str | None:
    """Return the azurite-blob command: on PATH, in AZURITE_BIN, or in ./node_modules."""
    candidates = [os.environ.get("AZURITE_BIN"), shutil.which("azurite-blob")]
    root = Path(__file__).resolve().parents[2]
    candidates.append(str(root / "node_modules" / ".bin" / "azurite-blob"))
    return next((c for c in candidates if c and Path(c).exists()), None)


class Azurite:
    """An Azurite blob service in memory, on 127.0.0.1."""

    def __init__(self, command: str, log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                command,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(
                r"listens on http://127\.0\.0\.1:(\d+)", self.log_path.read_text()
            )
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"Azurite did not start: {self.log_path.read_text()[-2000:]}"
        )

    @property
    def connection_string(self) -> str:
        """Return the connection string for this instance."""
        return connection_string(self.port)

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
