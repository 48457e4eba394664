"""Rollout engines, one protocol: generate(prompt_ids, n, SamplingParams) -> n Completions per
prompt, with the logprob each token was sampled with; load_weights(weights), a state dict or
(name, tensor) pairs (which a sharded policy yields a tensor at a time); close() once the run is
over.

hf.py decodes with the policy module itself (CPU or GPU, nothing to sync); vllm.py hands
sampling to an in-process vLLM that keeps its own copy of the weights (`rlvr[vllm]`).
"""

from __future__ import annotations


def make_engine(cfg, model, tokenizer, eos_token_ids: list[int], autocast=None, weights=None):
    """The engine `cfg` (a RolloutConfig) names, over the policy `model`. vllm is imported only here.
    `autocast` (a torch dtype, or None: off) is the run's (models.resolve_precision): the HF engine
    decodes under it, and vLLM computes in it, taking bf16 copies of float32 master weights.
    `weights` (vllm): how to read the policy's whole weights when `model` holds a shard of them."""
    if cfg.engine == "vllm":
        from rlvr.rollout.vllm import VLLMEngine

        return VLLMEngine(model, tokenizer, eos_token_ids, gpu_memory_utilization=cfg.gpu_memory_utilization,
                          dtype=autocast, weights=weights, **cfg.vllm_args)
    from rlvr.rollout.hf import HFEngine

    return HFEngine(model, tokenizer, eos_token_ids, autocast=autocast, cuda_graph=cfg.cuda_graph)
