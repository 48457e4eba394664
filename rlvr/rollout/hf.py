"""Rollout engine over a Hugging Face causal LM, for CPU and GPU.

All sequences of a rollout batch are decoded together, one token per forward pass, over a KV
cache. Each distinct prompt is prefilled once and its cache repeated for its G samples (what
`model.generate(num_return_sequences=G)` computes G times). Prompts are left-padded so every
row's next token sits in the last column; rows that sampled EOS are dropped from the batch (and
from the cache) as soon as enough of them have finished, so late steps cost only what is still
running. Compared to `model.generate`, it skips the logits-processor and stopping-criteria
machinery and returns what RL needs: token ids, the logprob each token was sampled with, and
why each sequence stopped.

Llama, Qwen2 and Qwen3 models decode through `fast_decoder` (the same arithmetic without the
HF forward's per-step Python overhead, over a preallocated KV cache); any other causal LM goes
through its own forward with a DynamicCache. Both give the same tokens and logprobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from rlvr.models import eval_mode, under_autocast
from rlvr.rollout import fast_decoder
from rlvr.types import Completion


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None  # None: use (and advance) the global torch RNG


def sample_next(logits: torch.Tensor, params: SamplingParams,
                uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row. logits [B, V], uniform [B, 1] float64 in [0, 1) (the row's random
    number for this step; None: from the global RNG) -> (tokens [B], logprobs [B]).

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
    if uniform is None:
        uniform = torch.rand((len(logits), 1), dtype=torch.float64, device=logits.device)  # [B, 1]
    tokens = _inverse_cdf(logprobs.exp(), uniform)  # [B]
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One exact draw per row from probs [B, V] (need not sum to 1), given uniform [B, 1] float64
    in [0, 1) -> tokens [B].

    One uniform per row, not one per vocabulary entry as torch.multinomial's exponential race
    draws: on CPU that generator work was ~0.9 ms of a ~12 ms decode step at batch 512, this is
    ~0.1 ms. With u uniform on (0, total], token i is the first whose cumulative mass reaches
    u, so it is drawn with probability probs[i] / total, and a token of zero mass (outside the
    nucleus) never: its cumulative mass equals its predecessor's, which is below u. The sums
    are float64, so their rounding is far below anything a float32 probability could show.
    """
    cdf = probs.double().cumsum(dim=-1)  # [B, V]
    u = (1 - uniform) * cdf[:, -1:]  # [B, 1] in (0, total]: never past the last token, never 0
    return torch.searchsorted(cdf, u).squeeze(1)  # [B] first i with cdf[i] >= u


def _nucleus(logprobs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose mass reaches top_p; renormalise. [B, V] -> [B, V]."""
    sorted_lp, order = logprobs.sort(dim=-1, descending=True)
    mass_before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()  # mass of strictly better tokens
    drop_sorted = mass_before >= top_p  # the top token is always kept (mass_before = 0)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    kept = logprobs.masked_fill(drop, float("-inf"))
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


STATIC_CHECK_EVERY = 8  # fixed-shape decoding (rollout.cuda_graph) checks for the batch's end every this many steps


class HFEngine:
    """generate(prompt_ids, n, params) -> n Completions per prompt. Shares the policy module.
    With `autocast` (bf16; models.resolve_precision) every decoding forward runs under
    torch.autocast to it, as the trainer's forwards do; sampling is float32 either way.

    With `cuda_graph` (rollout.cuda_graph) a model the fast decoder supports decodes with steps of
    fixed shapes, on a GPU captured once per batch as a CUDA graph (fast_decoder.CudaGraphStep).
    Finished rows then stay in the batch to the end (their tokens are dropped) rather than leave
    it. On a CPU there is no graph: the same fixed-shape steps, which only tests want."""

    def __init__(self, model: PreTrainedModel, tokenizer, eos_token_ids: list[int], max_batch: int = 1024,
                 autocast: torch.dtype | None = None, cuda_graph: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.pad = tokenizer.pad_token_id
        self.eos = torch.tensor(eos_token_ids, dtype=torch.long)
        self.max_batch = max_batch
        self.autocast = autocast
        self.cuda_graph = cuda_graph

    def load_weights(self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy weights (Hugging Face names) into the decoding module, a tensor at a time. With the
        trainer's own module nothing needs this (updates are already visible); a decoding copy
        of a sharded policy is refreshed through it from distributed.iter_full_state, so no
        whole second copy of the weights exists while it runs. Every entry must be given."""
        own = self.model.state_dict()
        missing = set(own)
        with torch.no_grad():
            for name, tensor in weights.items() if isinstance(weights, Mapping) else weights:
                if name not in own:
                    raise ValueError(f"load_weights: {name!r} is not a weight of the decoding model")
                own[name].copy_(tensor)  # casts to the copy's dtype (bf16 under autocast)
                missing.discard(name)
        if missing:
            raise ValueError(f"load_weights: no tensor for {sorted(missing)[:5]} ({len(missing)} in all)")

    def close(self) -> None:
        """Nothing to release: the engine holds no memory of its own between rollouts."""

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        rows = [ids for ids in prompt_ids for _ in range(n)]  # prompt i's copies are rows i*n .. i*n+n-1
        # every random number the call may use, drawn up front: row i's token t comes from
        # draws[i, t], whichever other rows finished before it, whether finished rows leave the
        # batch or stay (rollout.cuda_graph) and however max_batch cuts the call; and the call
        # takes the same count from the RNG however its rows end
        draws = None
        if params.temperature > 0:
            generator = None
            if params.seed is not None:
                generator = torch.Generator(device=self.model.device).manual_seed(params.seed)
            draws = torch.rand((len(rows), params.max_new_tokens), dtype=torch.float64, device=self.model.device,
                               generator=generator)  # [B, N]
        flat: list[tuple[list[int], list[float], str]] = []
        # inference_mode, not just no_grad: it skips version-counter work on every small op. Under
        # autocast, no_grad and one autocast region for the whole call: autocast then casts each
        # trainable float32 weight to bf16 once (its cast cache, which inference_mode turns off),
        # not at every decode step
        no_grad = torch.inference_mode() if self.autocast is None else torch.no_grad()
        with no_grad, under_autocast(self.autocast, self.model.device):
            for start in range(0, len(rows), self.max_batch):
                part = None if draws is None else draws[start : start + self.max_batch]
                flat.extend(self._decode(rows[start : start + self.max_batch], params, part))
        out = []
        for i in range(len(prompt_ids)):
            group = []
            for tokens, logprobs, reason in flat[i * n : (i + 1) * n]:
                group.append(Completion(self._text(tokens), tokens, logprobs, reason))
            out.append(group)
        return out

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _decode(self, rows: list[list[int]], params: SamplingParams, draws: torch.Tensor | None):
        with eval_mode(self.model):  # and back to its mode afterwards, also when decoding fails
            yield from self._decode_rows(rows, params, draws)

    def _decode_rows(self, rows: list[list[int]], params: SamplingParams, draws: torch.Tensor | None):
        """draws [B, N]: each row's random number for each step (None: greedy)."""
        device = self.model.device
        # each distinct prompt is prefilled once (a group's samples share it), then its cache and
        # last logits are repeated for every row that holds it
        distinct: dict[tuple[int, ...], int] = {}
        inverse = torch.tensor([distinct.setdefault(tuple(r), len(distinct)) for r in rows], device=device)  # [B]
        input_ids, mask = _left_pad([list(r) for r in distinct], self.pad)  # [U, P]
        input_ids, mask, eos = input_ids.to(device), mask.to(device), self.eos.to(device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # [U, P]
        B, N = len(rows), params.max_new_tokens
        fast = fast_decoder.supports(self.model)
        static = self.cuda_graph and fast  # fixed shapes, rows never leave
        if fast:
            decoder = fast_decoder.FastDecoder(self.model, mask, N, autocast=self.autocast, capacity=B, static=static)
        else:
            decoder = _HFDecoder(self.model, mask)
        graph = None  # static steps on a GPU: the first step captures, every step replays
        logits = decoder.prefill(input_ids, positions)  # [U, V]
        if len(distinct) < B:
            decoder.select(inverse)
            logits, positions = logits[inverse], positions[inverse]  # [B, V], [B, P]
        next_pos = positions[:, -1:] + 1  # [B, 1]
        alive = torch.arange(B, device=device)  # original row index of each live row
        tokens_out = torch.full((B, N), self.pad, dtype=torch.long, device=device)
        logprobs_out = torch.zeros((B, N), device=device)
        # tokens each row keeps once it sampled EOS (0: still running); per live row, so a step
        # costs a few elementwise ops on [b] rather than boolean indexing into [B]
        stop_at = torch.zeros(B, dtype=torch.long, device=device)  # [b]
        stop_at_rows = torch.zeros(B, dtype=torch.long, device=device)  # [B] stop_at, saved as rows leave
        for t in range(N):
            tok, lp = sample_next(logits, params, None if draws is None else draws[alive, t, None])  # [b], [b]
            tokens_out[alive, t] = tok
            logprobs_out[alive, t] = lp
            stop_at = torch.where(torch.isin(tok, eos) & (stop_at == 0), t + 1, stop_at)  # [b]
            if t == N - 1:
                break
            # reading how many rows finished waits for the device: a replayed graph would then idle
            # while the host launches the next sampling kernels. Fixed-shape steps keep finished
            # rows (their tokens past stop_at are dropped), so they check only every few steps, at
            # the cost of up to that many steps after the last row finished
            if not static or t % STATIC_CHECK_EVERY == STATIC_CHECK_EVERY - 1:
                done = stop_at > 0  # [b] rows that ended here or earlier but are still in the batch
                n_done = int(done.sum())
                if n_done == len(alive):
                    break
                if not static and n_done * 4 >= len(alive):  # drop finished rows once they are a quarter of the batch
                    stop_at_rows[alive] = stop_at
                    idx = (~done).nonzero().squeeze(1)
                    decoder.select(idx)
                    alive, next_pos, tok, stop_at = alive[idx], next_pos[idx], tok[idx], stop_at[idx]
            if static and device.type == "cuda":
                graph = graph or fast_decoder.CudaGraphStep(decoder, tok, next_pos)
                logits = graph(tok, next_pos)  # [b, V]
            else:
                logits = decoder.step(tok, next_pos)  # [b, V]
            next_pos = next_pos + 1
        stop_at_rows[alive] = stop_at
        tokens_out, logprobs_out, stop_at_rows = tokens_out.cpu(), logprobs_out.cpu(), stop_at_rows.tolist()
        for i, stop in enumerate(stop_at_rows):
            L = stop or N
            yield tokens_out[i, :L].tolist(), logprobs_out[i, :L].tolist(), "stop" if stop else "length"


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids, mask [B, P] (long, 1 on real tokens); every row's last token in column P-1."""
    B, P = len(rows), max(len(r) for r in rows)
    input_ids = torch.full((B, P), pad, dtype=torch.long)
    mask = torch.zeros((B, P), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, P - len(r) :] = torch.tensor(r)
        mask[i, P - len(r) :] = 1
    return input_ids, mask

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
        # only the last column is sampled: a prefill need not compute [b, P, V] logits
        keep = {"logits_to_keep": 1} if _accepts(self.model, "logits_to_keep") else {}
        cache = "cache" if _accepts(self.model, "cache") else "past_key_values"  # renamed in transformers 5.x
        out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
                         **{cache: self.cache}, **keep)
        return out.logits[:, -1]  # [b, V]


def _accepts(model, name: str) -> bool:
    """Does the model's forward take keyword `name`? (A peft wrapper: its base model's forward.)"""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(inner.forward).parameters
