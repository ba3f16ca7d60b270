"""Group evaluations on Ray actors: one model replica per GPU (or per CPU worker), batches sent to
whichever replica is free, results handed back as they finish.

Every replica loads the model named by the run's config and opens every problem of the stage (its
prompt rows and ablation, shipped once through Ray's object store); the driver keeps the search,
the journal and the files. A replica whose re-measured baseline differs from the driver's (another
device or dtype) is refused, so a label never depends on where it was computed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mecharule.config import RunConfig
from mecharule.errors import ConfigError, MecharuleError
from mecharule.executor.base import OnResult
from mecharule.executor.work import GroupBatch, ProblemData

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # a local cluster started here: problems are small


class RayExecutor:
    name = "ray"
    local = False

    def __init__(self, config: RunConfig, *, workers: int | None = None, address: str | None = None) -> None:
        ray = _import_ray()
        cfg = config.executor
        cpus = cfg.cpus_per_worker
        gpus = cfg.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if config.model.device.startswith("cuda") else 0.0
        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
            if address:
                ray.init(address=address, **options)
            else:
                n_cpus = (workers or os.cpu_count() or 1) * cpus
                ray.init(num_cpus=n_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **options)
            self._started = True
        resources = ray.cluster_resources()
        if workers is None:
            workers = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // cpus)
        if workers < 1:
            raise ConfigError(
                f"the Ray cluster has {dict(resources)} resources: no room for one worker with "
                f"{cpus} CPU and {gpus} GPU (executor.cpus_per_worker, executor.gpus_per_worker)"
            )
        model = config.model if not gpus else config.model.model_copy(update={"device": "cuda"})
        payload = config.model_copy(update={"model": model}).model_dump(mode="json")
        from mecharule.executor.replica import Replica

        actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(Replica)
        self.workers = workers
        self.actors = [actor.remote(payload, cpus) for _ in range(workers)]
        self._ray = ray

    def open(self, problems: Mapping[str, ProblemData]) -> None:
        shared = self._ray.put(dict(problems))
        answers = self._ray.get([a.open.remote(shared) for a in self.actors])
        disagree = {k: n for answer in answers for k, n in answer.items() if n}
        if disagree:
            raise MecharuleError(
                f"a Ray worker's baseline differs from the driver's on {disagree} prompts; run the "
                "workers on the driver's device and dtype (model.device, model.dtype)"
            )

    def run(self, batches: Sequence[GroupBatch], on_result: OnResult) -> None:
        ray = self._ray
        queue = list(enumerate(batches))
        idle = list(self.actors)
        pending: dict[Any, tuple[int, Any]] = {}
        while queue or pending:
            while queue and idle:
                index, batch = queue.pop(0)
                worker = idle.pop(0)
                pending[worker.run.remote(batch)] = (index, worker)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index, worker = pending.pop(ref)
                on_result(index, ray.get(ref))
                idle.append(worker)

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "executor.kind 'ray' needs Ray, which is not installed: pip install 'mecharule[ray]'"
        ) from exc
    return ray


__all__ = ["RayExecutor"]
