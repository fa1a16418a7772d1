"""The streaming pipeline's network and skeleton thinning on a ``dask.distributed`` cluster.

:func:`~napari_topo.inference.chunked.segment_to_ome_zarr` with ``client=`` sends the
two stages whose work is per block, costly and independent between blocks to the
workers, and keeps everything else in this process, as without a cluster:

- **on the workers**: the network's forward passes (:func:`cluster_model`) and the
  thinning of the skeleton stage (:func:`thin_on_cluster`);
- **here**: reading the input and the mask and writing every output (the workers need
  not see the data or the files); the sliding window and its blending; the mask and the
  tree labels (:func:`~napari_topo.inference.chunked.label_components_chunked`: cc3d per
  chunk and a union-find over the chunk borders, sequential by nature since each chunk's
  labels are numbered after all the chunks before it and each border is joined when its
  row of chunks is complete, and cheap: a linear pass over the mask, a fraction of the
  thinning's time); the pyramids (block means of the written outputs: the time goes into
  reading and writing zarr here, which shipping the blocks out and back would only add
  to).

**Network.** The sliding window is asked for batches of ``batch_size`` x (the cluster's
worker threads) tiles at once, and :func:`cluster_model` (a torch module) cuts each into
batches of ``batch_size`` tiles, one task each, run at the same time. The tiles, their
order, their grouping into batches of ``batch_size`` and the accumulation are those of the
single-process run, so the outputs are identical: bit for bit when the workers run the
same torch build on the same kind of CPU with the same kind of thread pool
(tests/test_distributed.py checks it on a LocalCluster of 2 in-process workers). torch's
one-thread CPU kernels round differently from its multi-thread ones: worker processes
started by ``--workers`` (one thread each) gave probabilities within 2.4e-7 of a 2-thread
single-process run (up to 3e-6 measured on single tiles), with the same mask, skeleton
and trees; a voxel within that of the threshold could flip.

**Skeleton.** :func:`~napari_topo.inference.chunked.skeletonize_chunked` with
``client=`` reads each chunk of the mask with its halo here, packs it (``np.packbits``,
one bit a voxel) and sends it as one task (:func:`thin_on_worker`): the worker thins the
box with the function used without a cluster and sends the core's skeleton back, packed;
it is written here in the order the tasks finish (the chunks are disjoint). Same function,
same boxes, integer arithmetic: the skeleton is the one without a cluster, bit for bit, on
any CPU. At most two boxes per worker thread are on their way at once, so memory here and
on the workers is bounded by the chunk, not the volume. Chunks without a mask voxel are
written as zeros here, without a task.

What a worker needs: the same Python environment (napari-topo, torch, scikit-image, dask,
distributed at the same versions). Not the data (tiles and mask boxes travel as arrays,
results come back) and not the model: the weights travel with the tasks (scattered once
to every worker) and each worker checks their SHA-256 against the card's before it
builds the network (:func:`forward_on_worker`; a mismatch raises
:class:`~napari_topo.models.registry.WeightsIntegrityError`).

Traffic: per tile, the normalised input (float32, ``tile**3 * 4`` bytes: 1 MiB for 64^3
tiles) out and the network's outputs (as much per channel) back; per chunk of the
skeleton, ``(chunk + 2 * halo)**3 / 8`` bytes out (0.42 MiB for 128^3 chunks and the
default halo of 12) and ``chunk**3 / 8`` back (0.25 MiB).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import numpy as np

__all__ = [
    "cluster_model",
    "cluster_slots",
    "connect",
    "forward_on_worker",
    "model_payload",
    "thin_on_cluster",
    "thin_on_worker",
]

#: On each worker: SHA-256 -> (the weights object checked, the network built from it).
_WORKER_MODELS: dict[str, tuple[Any, Any]] = {}
_WORKER_LOCK = threading.Lock()


def connect(workers: int | None = None, scheduler: str | None = None):
    """A ``distributed.Client``: to ``scheduler``, or to a new LocalCluster of ``workers``.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a new :class:`distributed.LocalCluster` on this machine (one
        thread each; distributed sets ``OMP_NUM_THREADS=1`` in them, so N workers use N
        cores).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).

    Returns
    -------
    (client, cluster)
        ``cluster`` is None for ``scheduler``; close both when done.

    Raises
    ------
    ValueError
        Neither or both given, ``workers < 1``, ``distributed`` not installed, or the
        scheduler cannot be reached; one line each.
    """
    if (workers is None) == (scheduler is None):
        raise ValueError("give either workers (a LocalCluster) or scheduler (an address)")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--workers/--scheduler need dask.distributed: pip install 'napari-topo[distributed]'"
        ) from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"cannot reach the dask scheduler at {scheduler} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); is it running?"
            ) from None
    n = int(workers)
    if n < 1:
        raise ValueError(f"--workers must be at least 1; got {workers}")
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster


def model_payload(module, card, weights_path=None) -> tuple[bytes, str]:
    """The weights as bytes and their SHA-256, as the workers receive them.

    The weights file itself when ``weights_path`` is given (its SHA-256 must be the
    card's), else the module's ``state_dict`` saved by safetensors (a model made in
    memory, e.g. a fine-tuned one not yet saved).

    Raises
    ------
    WeightsIntegrityError
        The file's SHA-256 differs from the card's.
    """
    from ..models.registry import WeightsIntegrityError

    if weights_path is not None:
        from pathlib import Path

        data = Path(weights_path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if card.sha256 and sha != card.sha256:
            raise WeightsIntegrityError(
                f"model {card.name!r}: SHA-256 of {weights_path} is {sha}, but its card "
                f"expects {card.sha256}"
            )
        return data, sha
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    data = save(state)
    return data, hashlib.sha256(data).hexdigest()


def forward_on_worker(
    weights: bytes,
    sha256: str,
    architecture: str,
    arch_kwargs: dict,
    x: np.ndarray,
    device: str | None = "auto",
    precision: str = "auto",
):
    """One batch through the network, on a worker: ``x`` (N, 1, z, y, x) float32.

    ``precision`` is resolved on the worker
    (:func:`~napari_topo.inference.device.resolve_precision`: "auto" is bfloat16 on a
    worker CPU with native bfloat16), as the single-process run resolves it locally.

    The network is built once per worker from ``weights`` after their SHA-256 is checked
    against ``sha256`` (again whenever another weights object arrives), and kept.

    Returns
    -------
    ndarray or dict of ndarray
        The network's raw output (logits; TopNet's dict), float32, on the CPU.

    Raises
    ------
    WeightsIntegrityError
        The weights that arrived are not the ones the card names.
    """
    import torch

    from ..models.registry import WeightsIntegrityError, build_model
    from .device import autocast_context, memory_format, pick_device, resolve_precision

    dev = pick_device(device)
    dtype = resolve_precision(precision, dev, embedding=architecture == "topnet")
    with _WORKER_LOCK:
        cached = _WORKER_MODELS.get(sha256)
        if cached is None or cached[0] is not weights:
            actual = hashlib.sha256(weights).hexdigest()
            if actual != sha256:
                raise WeightsIntegrityError(
                    f"worker pid {os.getpid()}: the weights received have SHA-256 {actual}, "
                    f"not {sha256}; they were corrupted on the way or are not the model's"
                )
            from safetensors.torch import load

            net = build_model(architecture, arch_kwargs)
            net.load_state_dict(load(weights), strict=True)
            cached = (weights, net.eval())
            _WORKER_MODELS[sha256] = cached
        fmt = memory_format(dev)
        net = cached[1].to(dev).to(memory_format=fmt)
    with torch.inference_mode(), autocast_context(dev, dtype=dtype, enabled=dtype is not None):
        y = net(torch.from_numpy(np.ascontiguousarray(x)).to(dev).contiguous(memory_format=fmt))
    if isinstance(y, dict):
        return {k: v.float().cpu().numpy() for k, v in y.items()}
    return y.float().cpu().numpy()


def cluster_model(
    client,
    card,
    weights: bytes,
    sha256: str,
    per_batch: int,
    device: str | None = "auto",
    precision: str = "auto",
):
    """A ``torch.nn.Module`` whose forward pass runs on the cluster of ``client``.

    Each call cuts its batch into batches of ``per_batch`` tiles, sends each to a worker
    (:func:`forward_on_worker`, all at once) and joins the results in order. The weights
    are scattered to every worker once, here.

    Parameters
    ----------
    client : distributed.Client
    card : ModelCard
        Architecture and arguments of the network.
    weights, sha256
        From :func:`model_payload`.
    per_batch : int
        Tiles per task: the ``batch_size`` of the single-process run it must equal.
    device : str, optional
        Device on each worker ("auto": its GPU if it has one).
    precision : str, optional
        Network arithmetic on each worker (resolved there, see
        :func:`forward_on_worker`).
    """
    import torch

    class _Cluster(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.client = client
            self.per_batch = int(per_batch)
            self.spec = (sha256, card.architecture, dict(card.arch_kwargs or {}))
            self.device_name = device
            self.precision = precision
            self.weights = client.scatter(weights, broadcast=True, hash=False)

        def forward(self, x):
            sha, arch, kwargs = self.spec
            parts = torch.split(x.detach().float().cpu(), self.per_batch)
            futures = [
                self.client.submit(
                    forward_on_worker,
                    self.weights,
                    sha,
                    arch,
                    kwargs,
                    p.numpy(),
                    self.device_name,
                    self.precision,
                    pure=False,
                )
                for p in parts
            ]
            outs = self.client.gather(futures)
            if isinstance(outs[0], dict):
                return {
                    k: torch.from_numpy(np.concatenate([o[k] for o in outs])).to(x.device)
                    for k in outs[0]
                }
            return torch.from_numpy(np.concatenate(outs)).to(x.device)

    return _Cluster()


def cluster_slots(client) -> int:
    """Worker threads of the cluster (at least 1): tasks that run at once."""
    info = client.scheduler_info()
    workers = info.get("workers", {}) if isinstance(info, dict) else {}
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def thin_on_worker(bits: np.ndarray, shape: tuple[int, ...], core: tuple[slice, ...], cut=None):
    """Lee's 3D thinning of one box of the mask, on a worker: the skeleton of its core.

    ``bits`` is the bool box of ``shape`` packed by ``np.packbits`` (C order); the box is
    thinned by :func:`napari_topo.topology.skeleton.skeletonize_box` with the box's
    ``cut`` faces (None: every face taken as cut) as
    :func:`~napari_topo.inference.chunked.skeletonize_chunked` does without a cluster,
    and the part ``core`` of the skeleton comes back packed the same way.
    """
    from ..topology.skeleton import skeletonize_box

    block = np.unpackbits(bits, count=int(np.prod(shape))).view(bool).reshape(shape)
    cut = ((True, True),) * len(shape) if cut is None else cut
    return np.packbits(skeletonize_box(block, cut)[core])


def thin_on_cluster(client, boxes, in_flight: int | None = None):
    """Thin boxes of the mask on the cluster of ``client``, a bounded number at a time.

    Parameters
    ----------
    client : distributed.Client
    boxes : iterable of (key, bool ndarray, core slices[, cut faces])
        The cut faces as :func:`~napari_topo.topology.skeleton.skeletonize_box` takes
        them (left out: every face taken as cut). Read lazily: the
        next box is taken only when fewer than ``in_flight`` are on their way, so the
        boxes held here and on the workers are bounded by ``in_flight``, not by the
        volume.
    in_flight : int, optional
        Tasks submitted and not yet collected (default: two per worker thread,
        :func:`cluster_slots`, so that no worker waits for its next box).

    Yields
    ------
    (key, bool ndarray)
        Each box's key and the skeleton of its core (:func:`thin_on_worker`, one task per
        box), in the order the tasks finish. An error on a worker is raised here, and the
        tasks still on their way are cancelled (so too when the caller stops early).
    """
    from distributed import as_completed

    limit = max(1, int(in_flight)) if in_flight else 2 * cluster_slots(client)
    running = as_completed()
    pending: dict[str, tuple[Any, Any, tuple[int, ...]]] = {}  # task key -> its box

    def collect(future):
        key, _, shape = pending.pop(future.key)
        bits = future.result()
        return key, np.unpackbits(bits, count=int(np.prod(shape))).view(bool).reshape(shape)

    try:
        for key, block, core, *cut in boxes:
            if len(pending) >= limit:
                yield collect(next(running))
            future = client.submit(
                thin_on_worker,
                np.packbits(block),
                block.shape,
                core,
                cut[0] if cut else None,
                pure=False,
            )
            pending[future.key] = (key, future, tuple(s.stop - s.start for s in core))
            running.add(future)
        for future in running:
            yield collect(future)
    finally:
        if pending:
            client.cancel([f for _, f, _ in pending.values()])
