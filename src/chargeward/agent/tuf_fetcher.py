"""python-tuf's network layer for the charger: httpx, every download capped and timed.

One dataclass, :class:`RepositoryLimits`, holds every cap and timeout of the repository client
(as python-tuf's ``UpdaterConfig`` does) and makes the ``UpdaterConfig``:

    >>> limits = RepositoryLimits(read_timeout=10.0)
    >>> limits.updater_config().timestamp_max_length
    16384
    >>> fetcher = HttpxFetcher(limits)  # Updater(..., fetcher=fetcher, config=...)
    >>> fetcher.close()
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, UpdaterConfig


@dataclass(frozen=True)
class RepositoryLimits:
    """Every cap, timeout and tolerance of the repository client (cf. ``UpdaterConfig``)."""

    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 30.0  # seconds between two received chunks
    download_timeout: float = 120.0  # seconds for one whole metadata file
    chunk_size: int = 64 * 1024
    root_max_length: int = 512_000  # bytes, per file
    timestamp_max_length: int = 16_384
    snapshot_max_length: int = 2_000_000
    targets_max_length: int = 5_000_000
    # A firmware image downloaded as a TUF target (a multi-image release's other components):
    # its own cap and time limit, since images are far larger than metadata.
    image_max_length: int = 512 * 1024 * 1024
    image_download_timeout: float = 1800.0
    max_root_rotations: int = 64  # roots loaded in one refresh
    max_delegations: int = 32  # roles visited for one target
    clock_tolerance: float = 300.0  # seconds of clock skew accepted against the time floor

    @property
    def max_download(self) -> int:
        """Hard cap of any one download, even where signed metadata lists a larger length."""
        return max(
            self.root_max_length,
            self.timestamp_max_length,
            self.snapshot_max_length,
            self.targets_max_length,
        )

    def updater_config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=self.max_delegations,
            root_max_length=self.root_max_length,
            timestamp_max_length=self.timestamp_max_length,
            snapshot_max_length=self.snapshot_max_length,
            targets_max_length=self.targets_max_length,
        )


class HttpxFetcher(FetcherInterface):
    """python-tuf's network layer over a synchronous ``httpx.Client``, capped and timed.

    HTTP errors become ``DownloadHTTPError`` (python-tuf reads 403/404 as "no newer root"),
    transport errors ``DownloadError``, a slow server ``SlowRetrievalError`` and an endless
    one ``DownloadLengthMismatchError``.
    """

    def __init__(
        self,
        limits: RepositoryLimits,
        targets_url: str | None = None,
        auth: tuple[str, str] | None = None,
        csms_roots: bytes | None = None,
    ) -> None:
        from chargeward.agent.location import tls_context

        self._limits = limits
        self._targets_url = targets_url  # downloads below it are images, not metadata
        # ``auth``: the station id and BasicAuthPassword, sent with every request so the
        # repository serves this customer's tenant role and images (ADR 0026).
        self._client = httpx.Client(
            timeout=httpx.Timeout(limits.read_timeout, connect=limits.connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": "chargeward-agent"},
            auth=httpx.BasicAuth(*auth) if auth is not None else None,
            verify=tls_context(csms_roots),  # system CAs + secure/csms-roots.pem (ADR 0025)
        )

    def close(self) -> None:
        self._client.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.TimeoutException as e:
            raise exceptions.SlowRetrievalError(f"{url}: {e!r}") from e
        except httpx.HTTPError as e:
            raise exceptions.DownloadError(f"{url}: {e!r}") from e
        if response.status_code != 200:
            response.close()
            raise exceptions.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        return self._chunks(url, response)

    def _chunks(self, url: str, response: httpx.Response) -> Iterator[bytes]:
        limits = self._limits
        image = self._targets_url is not None and url.startswith(self._targets_url)
        cap = limits.image_max_length if image else limits.max_download
        timeout = limits.image_download_timeout if image else limits.download_timeout
        deadline = time.monotonic() + timeout
        received = 0
        try:
            for chunk in response.iter_bytes(limits.chunk_size):
                received += len(chunk)
                if received > cap:
                    raise exceptions.DownloadLengthMismatchError(f"{url}: more than {cap} bytes")
                if time.monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(f"{url}: not complete after {timeout} s")
                yield chunk
        except httpx.TimeoutException as e:
            raise exceptions.SlowRetrievalError(f"{url}: {e!r}") from e
        except httpx.HTTPError as e:
            raise exceptions.DownloadError(f"{url}: {e!r}") from e
        finally:
            response.close()
