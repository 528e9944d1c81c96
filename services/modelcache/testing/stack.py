"""``ModelCacheStack``: the downloader, then the model service, on a real Docker engine.

Built on testcontainers (``DockerContainer``, ``Network``) and the Docker SDK it brings. The
containers run as the Compose file runs them: the downloader fills the models volume and
exits; the service mounts it read-only (read-only root, ``/tmp`` tmpfs, no capabilities,
uid 10001) and publishes port 8000 on 127.0.0.1 at a free port. See docs/testing.md.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelcache.errors import EXIT_CONFIG, ModelcacheError
from modelcache.testing import tinyset

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

VERSION = "0.1.0"
DOWNLOADER_IMAGE = f"modelcache-downloader:{VERSION}"
SERVICE_IMAGE = f"modelcache-service:{VERSION}"
#: Label on every container, network and volume a stack makes (its value: the stack's id).
LABEL = "org.modelcache.testing"
#: Label on a volume filled with the tiny set: the settings it was filled with (JSON).
TINYSET_LABEL = "org.modelcache.testing.tinyset"
LOG_TAIL = 25
_KIT_DIR = "/tmp"  # in the image already; the copies go with the container
_KEY_DIR = "/run/modelcache"


class StackError(ModelcacheError):
    """The stack could not start: which container, its exit code and its last log lines.

    ``container`` is ``model-downloader``, ``model-service`` or ``tiny-hub``; ``exit_code``
    is that container's exit status (``None`` when it was still running, e.g. not ready in
    time); ``logs`` is its whole log.
    """

    exit_code = EXIT_CONFIG
    title = "modelcache stack failed"
    default_remedy = "read the container's message above: its remedy line says what to change"

    def __init__(
        self,
        message: str,
        *,
        container: str = "",
        container_exit_code: int | None = None,
        logs: str = "",
        remedy: str | None = None,
    ) -> None:
        tail = [line for line in logs.splitlines() if line.strip()][-LOG_TAIL:]
        prefix = f"{container}| " if container else ""
        super().__init__(message, remedy=remedy, details=[prefix + line for line in tail])
        self.container = container
        self.container_exit_code = container_exit_code
        self.logs = logs


def _remedy_for(container: str, code: int | None) -> str:
    if code is None:
        return (
            f"the {container} did not become ready in time: raise start_timeout "
            "(--modelcache-start-timeout), or give it more memory (memory_limit)"
        )
    if container == "model-downloader" and code == 3:
        return (
            "the downloader could not reach the Hub: give the test machine network access, "
            "or run without it with the tiny model set (offline=True, --modelcache-offline)"
        )
    return "the container's own remedy line is above; exit codes are listed in docs/troubleshooting.md"


def _container_class() -> type[DockerContainer]:
    """testcontainers' DockerContainer, copying files into the folder that will hold them (its
    own copy unpacks at ``/``, which a read-only root refuses even for a path on a volume)."""
    import io
    import posixpath
    import tarfile

    from testcontainers.core.container import DockerContainer

    class Container(DockerContainer):
        def _transfer_into_container(self, transferable: Any, destination_in_container: str, mode: int) -> None:
            assert self._container is not None and isinstance(transferable, bytes)
            data = io.BytesIO()
            with tarfile.open(fileobj=data, mode="w") as tar:
                info = tarfile.TarInfo(posixpath.basename(destination_in_container))
                info.size, info.mode = len(transferable), mode
                tar.addfile(info, io.BytesIO(transferable))
            folder = posixpath.dirname(destination_in_container)
            if not self._container.put_archive(path=folder, data=data.getvalue()):
                raise OSError(f"could not copy {destination_in_container} into the container")

    return Container


class ModelCacheStack:
    """The modelcache stack as a context manager: downloader, then service, then ready.

    ``models``: the downloader's settings (``MODELCACHE_TEXT_EMBEDDING``, ``MODELCACHE_WHISPER``,
    ...; passed as environment to both containers, like ``.env``). ``offline=True`` serves the
    tiny model set instead of the Hub (:mod:`modelcache.testing.tinyset`); ``models`` then
    overrides its settings (e.g. ``{"MODELCACHE_VISION": "none"}``). ``volume``: a named volume
    to fill and keep (warm starts); ``None`` makes one that is removed on exit. ``env``: more
    variables for the service. ``api_key``: the key the service requires (a key file inside
    the container). ``reaper``: also register the containers with testcontainers' Ryuk (which
    removes them if the test process is killed); ``None``: when its image is present locally. Everything the stack made is removed on exit, and after a failed start,
    which raises :class:`StackError` carrying the failing container's exit code and message.
    """

    def __init__(
        self,
        models: Mapping[str, str] | None = None,
        *,
        offline: bool = False,
        volume: str | None = None,
        downloader_image: str = DOWNLOADER_IMAGE,
        service_image: str = SERVICE_IMAGE,
        env: Mapping[str, str] | None = None,
        api_key: str | None = None,
        start_timeout: float = 600.0,
        memory_limit: str = "4g",
        reaper: bool | None = None,
    ) -> None:
        self.models = dict(models or {})
        self.offline = offline
        self.volume = volume
        self.downloader_image = downloader_image
        self.service_image = service_image
        self.env = dict(env or {})
        self.api_key = api_key
        self.start_timeout = start_timeout
        self.memory_limit = memory_limit
        self.reaper = reaper
        self.id = uuid.uuid4().hex[:10]
        #: whether the volume existed before this stack (a warm start when it is complete)
        self.volume_existed = False
        #: seconds the downloader ran, and whether the tiny Hub had to be started
        self.downloader_seconds = 0.0
        self.hub_started = False
        self._own_volume = volume is None
        self._network: Network | None = None
        self._hub: DockerContainer | None = None
        self._downloader: DockerContainer | None = None
        self._service: DockerContainer | None = None
        self._settings: dict[str, str] = {}
        self._logs: dict[str, str] = {}
        self._port: int | None = None

    # --- public ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, the service's root (the OpenAI API is under ``/v1``)."""
        if self._port is None:
            raise RuntimeError("the stack is not started")
        return f"http://127.0.0.1:{self._port}"

    def openai_client(self, **kwargs: Any) -> Any:
        """The official ``openai.OpenAI`` client for this service (with its API key, if set)."""
        import openai

        kwargs.setdefault("api_key", self.api_key or "modelcache-test")
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", **kwargs)

    @property
    def settings(self) -> dict[str, str]:
        """The settings both containers got (the tiny set's, then ``models``)."""
        return dict(self._settings)

    def logs(self, container: str = "model-service") -> str:
        """The log (stdout and stderr) of ``model-service``, ``model-downloader`` or ``tiny-hub``;
        after stop, as it was when the container was removed."""
        live = {"model-service": self._service, "model-downloader": self._downloader, "tiny-hub": self._hub}
        c = live.get(container)
        if c is not None and c._container is not None:
            try:
                return c._container.logs().decode(errors="replace")
            except Exception:  # removed meanwhile
                pass
        return self._logs.get(container, "")

    def start(self) -> ModelCacheStack:
        from testcontainers.core.network import Network

        try:
            self._check_images()
            self._network = Network(docker_network_kw={"labels": {LABEL: self.id}}).create()
            existing = self._volume_labels() if self.volume else None
            self.volume_existed = existing is not None
            tiny: dict[str, str] = {}
            if self.offline:
                saved = (existing or {}).get(TINYSET_LABEL)
                tiny = json.loads(saved) if saved else self._start_hub()
            self._settings = {**tiny, **self.models}
            if self.volume is None:
                self.volume = f"modelcache-test-{self.id}"
            if existing is None:
                labels = {LABEL: self.id, **({TINYSET_LABEL: json.dumps(tiny)} if self.offline else {})}
                self._client().volumes.create(name=self.volume, labels=labels)
            code = self._run_downloader()
            if code != 0 and self.offline and not self.hub_started:
                # a kept volume that no longer matches: fill it again from the tiny Hub
                self._settings = {**self._start_hub(), **self.models}
                code = self._run_downloader()
            if code != 0:
                raise self._failure("model-downloader", code)
            self._stop(self._hub, "tiny-hub")
            self._hub = None
            self._start_service()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the containers, the network and (when the stack made it) the volume."""
        for name, c in (
            ("model-service", self._service),
            ("model-downloader", self._downloader),
            ("tiny-hub", self._hub),
        ):
            self._stop(c, name)
        self._service = self._downloader = self._hub = None
        if self._network is not None:
            try:
                self._network.remove()
            except Exception:
                pass
            self._network = None
        if self._own_volume and self.volume:
            try:
                self._client().volumes.get(self.volume).remove(force=True)
            except Exception:
                pass

    def __enter__(self) -> ModelCacheStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the containers ------------------------------------------------------------------------

    def _client(self) -> Any:
        import docker

        if not hasattr(self, "_docker"):
            self._docker = docker.from_env()
        return self._docker

    def _check_images(self) -> None:
        """Each image present, or pulled now; else a StackError naming it (before anything starts)."""
        import docker.errors

        for image in dict.fromkeys((self.downloader_image, self.service_image)):
            try:
                self._client().images.get(image)
                continue
            except docker.errors.ImageNotFound:
                pass
            try:
                self._client().images.pull(image)
            except docker.errors.DockerException as e:
                raise StackError(
                    f"image {image} is not on this Docker engine and could not be pulled",
                    container="",
                    remedy="build it (scripts/build-images), `docker load` the released images, or name "
                    "the image you have (downloader_image= / service_image=, --modelcache-*-image)",
                    logs=str(e),
                ) from None

    def _volume_labels(self) -> dict[str, str] | None:
        import docker.errors

        try:
            volume = self._client().volumes.get(self.volume)
        except docker.errors.NotFound:
            return None
        return dict(volume.attrs.get("Labels") or {})

    def _container(
        self, image: str, name: str, env: Mapping[str, str], command: list[str] | None = None, **kwargs: Any
    ) -> DockerContainer:
        assert self._network is not None
        c = _container_class()(image, env=dict(env), name=f"modelcache-test-{self.id}-{name}")
        c._command = command  # a list (DockerContainer's own parameter is typed as a string)
        c.with_network(self._network)
        labels = {LABEL: self.id, **kwargs.pop("labels", {})}
        c.with_kwargs(labels=labels, **kwargs)
        return c

    def _start_hub(self) -> dict[str, str]:
        """Start the tiny Hub (the service image runs tinyset.py); return its settings."""
        hub = self._container(
            self.service_image,
            "tiny-hub",
            {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
            entrypoint=["python", f"{_KIT_DIR}/tinyset.py"],
            command=["--root", "/tmp/tinyset", "--port", str(tinyset.HUB_PORT)],
        )
        hub.with_network_aliases(tinyset.HUB_HOST)
        package = resources.files("modelcache.testing")
        for module in ("tinyset.py", "tiny_models.py", "hfmirror.py"):
            hub.with_copy_into_container(package.joinpath(module).read_bytes(), f"{_KIT_DIR}/{module}")
        self._hub = hub
        self.hub_started = True
        self._start(hub)
        deadline = time.monotonic() + min(self.start_timeout, 300)
        found: dict[str, str] | None = None
        while True:
            text = self.logs("tiny-hub")
            if found is None:
                for line in text.splitlines():
                    if line.startswith(tinyset.READY_PREFIX):
                        found = json.loads(line[len(tinyset.READY_PREFIX) :])
            if found is not None and "listening on " in text:
                return tinyset.settings(found["whisper_sha256"])
            state = self._state(hub)
            if state.get("Status") == "exited":
                raise self._failure("tiny-hub", int(state.get("ExitCode", -1)))
            if time.monotonic() > deadline:
                raise self._failure("tiny-hub", None)
            time.sleep(0.2)

    def _run_downloader(self) -> int:
        if self._downloader is not None:
            self._stop(self._downloader, "model-downloader")
        from docker.types import Mount

        env = {**self._settings, "MODELCACHE_DIR": "/models"}
        self._downloader = self._container(
            self.downloader_image,
            "downloader" if not self.downloader_seconds else "downloader-again",
            env,
            mounts=[Mount("/models", self.volume, type="volume")],
        )
        started = time.monotonic()
        self._start(self._downloader)
        code = self._downloader.wait()
        self.downloader_seconds = time.monotonic() - started
        return code

    def _start_service(self) -> None:
        from docker.types import Mount

        env = {
            **self._settings,
            **self.env,
            "MODELCACHE_DIR": "/models",
            "MODELCACHE_HOST": "0.0.0.0",
            "MODELCACHE_PORT": "8000",
            "HF_TOKEN": "",
            "HUGGING_FACE_HUB_TOKEN": "",
        }
        mounts = [
            Mount("/models", self.volume, type="volume", read_only=True),
            Mount("/tmp", None, type="tmpfs", tmpfs_size=512 * 1024 * 1024),
        ]
        if self.api_key:
            env["MODELCACHE_API_KEY_FILE"] = f"{_KEY_DIR}/api_key"
            mounts.append(Mount(_KEY_DIR, None, type="volume"))  # anonymous: removed with the container
        service = self._container(
            self.service_image,
            "service",
            env,
            mounts=mounts,
            user="10001:10001",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mem_limit=self.memory_limit,
        )
        # published on 127.0.0.1 only, at a port the engine picks (free by construction)
        service.ports["8000/tcp"] = ("127.0.0.1",)  # type: ignore[assignment]
        if self.api_key:
            service.with_copy_into_container(self.api_key.encode(), f"{_KEY_DIR}/api_key", 0o444)
        self._service = service
        self._start(service)
        service.get_wrapped_container().reload()
        binding = service.get_wrapped_container().attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]
        self._port = int(binding["HostPort"])

    def _wait_ready(self) -> None:
        assert self._service is not None
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.base_url}/health/ready"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            state = self._state(self._service)
            if state.get("Status") in ("exited", "dead"):
                raise self._failure("model-service", int(state.get("ExitCode", -1)))
            if time.monotonic() > deadline:
                raise self._failure("model-service", None)
            time.sleep(0.25)

    def _start(self, c: DockerContainer) -> None:
        """Start ``c``; with Ryuk only when wanted (the stack removes what it made itself)."""
        import docker.errors
        from testcontainers.core.config import testcontainers_config as config

        if self.reaper is None:
            try:
                self._client().images.get(config.ryuk_image)
                self.reaper = True
            except docker.errors.ImageNotFound:
                self.reaper = False
        saved = config.ryuk_disabled
        config.ryuk_disabled = saved or not self.reaper
        try:
            c.start()
        finally:
            config.ryuk_disabled = saved

    def _state(self, c: DockerContainer) -> dict[str, Any]:
        wrapped = c.get_wrapped_container()
        wrapped.reload()
        return dict(wrapped.attrs.get("State") or {})

    def _failure(self, container: str, code: int | None) -> StackError:
        logs = self.logs(container)
        what = f"exited with code {code}" if code is not None else f"was not ready within {self.start_timeout:.0f}s"
        return StackError(
            f"{container} {what}",
            container=container,
            container_exit_code=code,
            logs=logs,
            remedy=_remedy_for(container, code),
        )

    def _stop(self, c: DockerContainer | None, name: str) -> None:
        if c is None or c._container is None:
            return
        try:
            self._logs[name] = c._container.logs().decode(errors="replace")
        except Exception:
            pass
        try:
            c._container.remove(force=True, v=True)
        except Exception:
            pass
