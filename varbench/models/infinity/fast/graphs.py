"""CUDA graphs for the sampler: the per-scale transformer forward, captured once, replayed.

At the small scales (1 to ~100 tokens) a forward pass is a few thousand tiny kernels, so
sampling is bound by kernel-launch overhead on the host, not by the GPU. Capturing each
scale's forward (all blocks + the head) as a CUDA graph replays those kernels without the
host. Everything a graph touches lives in static buffers: the scale's input tokens, the
condition (shared AdaLN, pooled vector, text keys/values and key mask) and the KV caches.
Text is padded to a multiple of `TEXT_BUCKET` tokens (masked: padded keys get no
attention weight), so prompts of similar length share graphs. Sampling itself (uniforms
from per-image generators) stays outside. A replay runs the plain forward's kernels, on
the same values except the masked text padding, so it samples what the plain sampler
samples up to fp32 rounding.

How it is switched on: `accelerate` (fast/__init__.py) replaces the plain sampler's
`scale_forward` with `scale_forward` below and marks the models that replay; for other
models, and for the released teacher's attention (no KV cache), it calls the plain one.

Graphs depend on (schedule, rows, text bucket, dtype) and hold their KV caches, so they
are kept per model in `GraphCache` and freed with `release_graphs(model)`. On the CPU
(tests) the same static-buffer path runs without capture, which checks everything but
the replay.
"""
from __future__ import annotations

import weakref
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from varbench.models.infinity import sampler
from varbench.models.infinity.layers import KVCache
from varbench.models.infinity.sampler import SamplingConfig
from varbench.models.infinity.schedule import ScaleSchedule
from varbench.models.infinity.transformer import Condition, Infinity

TEXT_BUCKET = 64
_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REPLAYING: weakref.WeakSet = weakref.WeakSet()  # the models `scale_forward` replays graphs for
plain_scale_forward = sampler.scale_forward


def scale_forward(model: Infinity, cond: Condition, schedule: ScaleSchedule, config: SamplingConfig):
    """`sampler.scale_forward`, replayed from CUDA graphs for the models marked by
    `replay_graphs` (KV-cached attention only)."""
    if model not in _REPLAYING or config.attention != "kv_cache":
        return plain_scale_forward(model, cond, schedule, config)
    text_kvs = [block.ca.text_kv(cond.text) for block in model.blocks]  # once for all scales
    return graph_cache(model).get(model, schedule, cond, text_kvs, config.amp).run


def replay_graphs(model: Infinity, on: bool) -> bool:
    """Mark (or unmark) `model` for graph replay; returns whether it was marked before."""
    before = model in _REPLAYING
    if on:
        _REPLAYING.add(model)
    else:
        _REPLAYING.discard(model)
    return before


class ScaleGraphs:
    """Static buffers (and, on CUDA, one captured graph per scale) for one input shape."""

    def __init__(self, model: Infinity, schedule: ScaleSchedule, cond: Condition,
                 text_kvs: list[tuple[torch.Tensor, torch.Tensor]], amp: bool):
        # A weak reference: this object lives in _CACHES, keyed weakly by the model; a strong
        # one would keep the model (and its graphs' memory pools) alive for the process,
        # e.g. one arm's 50 GB still allocated while the next arm of a worker runs.
        self.model, self.schedule, self.amp = weakref.proxy(model), schedule, amp
        device, rows, width = cond.pooled.device, cond.batch_size, model.config.width
        self.capture = device.type == "cuda"
        self.text_length = -(-cond.text.shape[1] // TEXT_BUCKET) * TEXT_BUCKET
        self.pooled = torch.zeros(rows, width, device=device)
        self.ada = torch.zeros(rows, 1, 6, width, device=device)
        self.mask = torch.zeros(rows, self.text_length, dtype=torch.bool, device=device)
        self.text_kvs = [tuple(_padded(t, self.text_length) for t in kv) for kv in text_kvs]
        self.inputs = [torch.zeros(rows, n, width, device=device) for n in schedule.tokens_per_scale]
        k0 = text_kvs[0][0]
        self.caches = [KVCache(schedule.num_tokens) for _ in text_kvs]
        for cache in self.caches:
            cache.allocate((rows, k0.shape[1], schedule.num_tokens, k0.shape[3]), k0.dtype, device)
        self.rope = model.rope.get(schedule, model.config.head_dim, device)
        self.load(cond, text_kvs)
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.outputs: list[torch.Tensor] = []
        if self.capture:
            self._capture_all()

    def key(self) -> tuple:
        return ScaleGraphs.key_for(self.schedule, self.pooled.shape[0], self.text_length, self.caches[0].k.dtype)

    @staticmethod
    def key_for(schedule: ScaleSchedule, rows: int, text_tokens: int, dtype: torch.dtype) -> tuple:
        return schedule, rows, -(-text_tokens // TEXT_BUCKET) * TEXT_BUCKET, dtype

    def load(self, cond: Condition, text_kvs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a new batch's condition into the static buffers."""
        length = cond.text.shape[1]
        self.pooled.copy_(cond.pooled)
        self.ada.copy_(cond.ada)
        self.mask.zero_()
        self.mask[:, :length] = True if cond.text_mask is None else cond.text_mask
        for (k_static, v_static), (k, v) in zip(self.text_kvs, text_kvs):
            k_static.zero_()[:, :, :length] = k
            v_static.zero_()[:, :, :length] = v

    def run(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Logits of scale `index` for input tokens x (a view into a static buffer)."""
        self.inputs[index].copy_(x)
        if not self.capture:
            return self._forward(index)
        self.graphs[index].replay()
        return self.outputs[index]

    def _forward(self, index: int) -> torch.Tensor:
        start, end = self.schedule.bounds()[index]
        cond = Condition(self.pooled, self.ada, None, self.mask)
        level = self.model.lvl_embed.weight[index]
        autocast = nullcontext()
        if self.capture and self.amp:  # the autocast weight cache cannot live inside a graph
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        with autocast:
            hidden = self.model.run_blocks(self.inputs[index], cond, level, self.rope[start:end], (),
                                           self.text_kvs, self.caches, start)
        return self.model.logits(hidden, cond)

    def _capture_all(self) -> None:
        pool = torch.cuda.graph_pool_handle()
        for index in range(self.schedule.num_scales):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside capture (lazy inits, workspaces)
                self._forward(index)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                output = self._forward(index)
            self.graphs.append(graph)
            self.outputs.append(output)


def _padded(t: torch.Tensor, length: int) -> torch.Tensor:
    """(B, H, Lt, d) -> zero-padded (B, H, length, d), a fresh static buffer."""
    return F.pad(t, (0, 0, 0, length - t.shape[2])).contiguous()


def graph_cache(model: Infinity) -> GraphCache:
    """The GraphCache of `model` (created on first use, dropped with the model)."""
    cache = _CACHES.get(model)
    if cache is None:
        cache = _CACHES[model] = GraphCache()
    return cache


def release_graphs(model: Infinity) -> None:
    """Free the graphs and KV caches kept for `model`."""
    _CACHES.pop(model, None)


class GraphCache:
    """The ScaleGraphs of one model, by input shape."""

    def __init__(self) -> None:
        self.entries: dict[tuple, ScaleGraphs] = {}

    def get(self, model: Infinity, schedule: ScaleSchedule, cond: Condition,
            text_kvs: list[tuple[torch.Tensor, torch.Tensor]], amp: bool) -> ScaleGraphs:
        key = ScaleGraphs.key_for(schedule, cond.batch_size, cond.text.shape[1], text_kvs[0][0].dtype)
        graphs = self.entries.get(key)
        if graphs is None:
            graphs = self.entries[key] = ScaleGraphs(model, schedule, cond, text_kvs, amp)
        else:
            graphs.load(cond, text_kvs)
        return graphs

    def clear(self) -> None:
        self.entries.clear()
