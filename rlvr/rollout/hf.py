"""Rollout engine over a Hugging Face causal LM, for CPU and GPU.

All sequences of a rollout batch are decoded together, one token per forward pass, over a KV
cache. Prompts are left-padded so every row's next token sits in the last column; rows that
sampled EOS are dropped from the batch (and from the cache) as soon as enough of them have
finished, so late steps cost only what is still running. Compared to `model.generate`, it skips
the logits-processor and stopping-criteria machinery and returns what RL needs: token ids, the
logprob each token was sampled with, and why each sequence stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from rlvr.rollout import fast_decoder
from rlvr.types import Completion


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None  # None: use (and advance) the global torch RNG


def sample_next(logits: torch.Tensor, params: SamplingParams, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row. logits [B, V] -> (tokens [B], logprobs [B]).

    The logprob is that of the distribution actually sampled from: temperature-scaled and, with
    top-p, renormalised over the nucleus (what an importance ratio against this engine needs).
    """
    logits = logits.float()
    if params.temperature == 0:
        logprobs = torch.log_softmax(logits, dim=-1)  # [B, V]
        tokens = logprobs.argmax(dim=-1)  # [B]
        return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)
    logprobs = torch.log_softmax(logits / params.temperature, dim=-1)  # [B, V]
    if params.top_p < 1.0:
        logprobs = _nucleus(logprobs, params.top_p)
    probs = logprobs.exp()
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [B]
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


def _nucleus(logprobs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose mass reaches top_p; renormalise. [B, V] -> [B, V]."""
    sorted_lp, order = logprobs.sort(dim=-1, descending=True)
    mass_before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()  # mass of strictly better tokens
    drop_sorted = mass_before >= top_p  # the top token is always kept (mass_before = 0)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    kept = logprobs.masked_fill(drop, float("-inf"))
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


class HFEngine:
    """generate(prompt_ids, n, params) -> n Completions per prompt. Shares the policy module."""

    def __init__(self, model: PreTrainedModel, tokenizer, eos_token_ids: list[int], max_batch: int = 1024):
        self.model = model
        self.tokenizer = tokenizer
        self.pad = tokenizer.pad_token_id
        self.eos = torch.tensor(eos_token_ids, dtype=torch.long)
        self.max_batch = max_batch

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """The engine decodes with the trainer's own module, so updates are already visible."""
        self.model.load_state_dict(state_dict)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        rows = [ids for ids in prompt_ids for _ in range(n)]  # prompt i's copies are rows i*n .. i*n+n-1
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator(device=self.model.device).manual_seed(params.seed)
        flat: list[tuple[list[int], list[float], str]] = []
        for start in range(0, len(rows), self.max_batch):
            flat.extend(self._decode(rows[start : start + self.max_batch], params, generator))
        out = []
        for i in range(len(prompt_ids)):
            group = []
            for tokens, logprobs, reason in flat[i * n : (i + 1) * n]:
                group.append(Completion(self._text(tokens), tokens, logprobs, reason))
            out.append(group)
        return out

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _decode(self, rows: list[list[int]], params: SamplingParams, generator):
        device = self.model.device
        was_training = self.model.training
        self.model.eval()
        B, P = len(rows), max(len(r) for r in rows)
        input_ids = torch.full((B, P), self.pad, dtype=torch.long)
        mask = torch.zeros((B, P), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's last prompt token in column P-1
            input_ids[i, P - len(r) :] = torch.tensor(r)
            mask[i, P - len(r) :] = 1
        input_ids, mask, eos = input_ids.to(device), mask.to(device), self.eos.to(device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # [B, P]
        if fast_decoder.supports(self.model):
            decoder = fast_decoder.FastDecoder(self.model, mask, params.max_new_tokens)
        else:
            decoder = _HFDecoder(self.model, mask)
        logits = decoder.prefill(input_ids, positions)  # [B, V]
        next_pos = positions[:, -1:] + 1  # [B, 1]
        alive = torch.arange(B, device=device)  # original row index of each live row
        tokens_out = torch.full((B, params.max_new_tokens), self.pad, dtype=torch.long, device=device)
        logprobs_out = torch.zeros((B, params.max_new_tokens), device=device)
        lengths = torch.full((B,), params.max_new_tokens, dtype=torch.long, device=device)
        stopped = torch.zeros(B, dtype=torch.bool, device=device)
        for t in range(params.max_new_tokens):
            tok, lp = sample_next(logits, params, generator)  # [b], [b]
            tokens_out[alive, t] = tok
            logprobs_out[alive, t] = lp
            new = torch.isin(tok, eos) & ~stopped[alive]  # [b] rows that end here
            lengths[alive[new]] = t + 1
            stopped[alive[new]] = True
            done = stopped[alive]  # [b] rows that ended here or earlier but are still in the batch
            n_done = int(done.sum())
            if t == params.max_new_tokens - 1 or n_done == len(alive):
                break
            if n_done * 4 >= len(alive):  # drop finished rows once they are a quarter of the batch
                idx = (~done).nonzero().squeeze(1)
                decoder.select(idx)
                alive, next_pos, tok = alive[idx], next_pos[idx], tok[idx]
            logits = decoder.step(tok, next_pos)  # [b, V]
            next_pos = next_pos + 1
        self.model.train(was_training)
        tokens_out, logprobs_out = tokens_out.cpu(), logprobs_out.cpu()
        for i in range(B):
            L = int(lengths[i])
            yield tokens_out[i, :L].tolist(), logprobs_out[i, :L].tolist(), "stop" if stopped[i] else "length"


class _HFDecoder:
    """Decoding through the module's own forward and a DynamicCache: right for any causal LM."""

    def __init__(self, model: PreTrainedModel, prompt_mask: torch.Tensor):
        self.model = model
        self.mask = prompt_mask  # [b, S] 1 on real tokens, grows by a column per step
        self.cache = DynamicCache()

    def prefill(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions [B, P] -> next-token logits [B, V]."""
        return self._forward(input_ids, positions)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [b], positions [b, 1] -> next-token logits [b, V]."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)  # [b, S+1]
        return self._forward(tokens[:, None], positions)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` [b'] of the batch (cache and mask alike)."""
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache,
            use_cache=True,
        )
        return out.logits[:, -1]  # [b, V]
