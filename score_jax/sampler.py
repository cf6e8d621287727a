"""Multi-turn sampler: every attempt of a problem in one compiled program, with log-probs.

One jitted call does, on a single KV cache:
  prefill the prompt once -> repeat the cache for the n samples of each prompt ->
  decode turn 1 (lax.while_loop, stops when every row hit a stop token or the budget) ->
  append the self-correction instruction right after each row's own turn-1 end ->
  decode turn 2 -> ... (any number of turns).
The cache keeps one length per row (see `KVCache`), so rows of different lengths stay
compact and turn 2 attends to exactly [prompt, y1, instruction] with no padding holes.

Per turn it returns the sampled tokens, a mask of valid generated tokens (the stop token
included: stopping is an action of the policy) and fp32 log-probs of the sampled tokens,
both under the sampling temperature and untempered, so the loss can reuse or recompute them.

Shapes are static: prompt lengths are padded up to a bucket, turn budgets and the instruction
length are fixed by `SamplerConfig`; a new batch of the same bucket reuses the compiled
program.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax.model import KVCache, Transformer

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Static shape and sampling settings (changing any of them recompiles).

  Attributes:
    prompt_buckets: allowed padded prompt lengths; a batch uses the smallest that fits.
    turn_budgets: maximum new tokens of each turn, e.g. (128, 128) for two attempts.
    instruction_len: padded length of the instruction appended before turns 2, 3, ...
    num_samples: samples per prompt; they share one prefill of the prompt.
    followups: samples of every later turn per attempt of the previous one; they share that
      attempt's cache (a tree of rollouts, so each second attempt has siblings with the
      same first attempt, an exact baseline for it). Rows = B * num_samples * followups.
    temperature: softmax temperature of sampling (ignored when greedy).
    top_k: keep the k most likely tokens (0 = off).
    top_p: nucleus sampling mass (1.0 = off).
    greedy: argmax decoding; log-probs are then reported at temperature 1.
    stop_ids: tokens that end a turn (EOS, end-of-turn).
    pad_id: token written after a row has stopped.
    cache_dtype: dtype of the KV cache (None = the model's dtype).
  """

  prompt_buckets: tuple[int, ...] = (64, 128, 256, 512)
  turn_budgets: tuple[int, ...] = (128, 128)
  instruction_len: int = 64
  num_samples: int = 1
  followups: int = 1
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  greedy: bool = False
  stop_ids: tuple[int, ...] = (1,)
  pad_id: int = 0
  cache_dtype: str | None = None

  def __post_init__(self):
    def bad(field, msg):
      raise ValueError(f"SamplerConfig.{field}={getattr(self, field)!r}: {msg}")

    if not self.prompt_buckets or any(b <= 0 for b in self.prompt_buckets):
      bad("prompt_buckets", "needs at least one positive length")
    if not self.turn_budgets or any(b < 0 for b in self.turn_budgets):
      bad("turn_budgets", "needs one non-negative budget per turn")
    if self.instruction_len < 0:
      bad("instruction_len", "must be non-negative")
    if self.num_samples < 1:
      bad("num_samples", "must be at least 1")
    if self.followups < 1:
      bad("followups", "must be at least 1")
    if not self.greedy and self.temperature <= 0:
      bad("temperature", "must be positive (use greedy=True for argmax decoding)")
    if self.top_k < 0:
      bad("top_k", "must be >= 0 (0 disables it)")
    if not 0.0 < self.top_p <= 1.0:
      bad("top_p", "must be in (0, 1]")
    if not self.stop_ids:
      bad("stop_ids", "needs at least one stop token")

  @property
  def num_turns(self) -> int:
    return len(self.turn_budgets)

  @property
  def rows_per_prompt(self) -> int:
    """Rows of the output per prompt: num_samples first attempts, each with `followups`
    later attempts (per later turn)."""
    return self.num_samples * self.followups ** max(self.num_turns - 1, 0)

  def bucket(self, length: int) -> int:
    for b in sorted(self.prompt_buckets):
      if length <= b:
        return b
    raise ValueError(
        f"prompt of {length} tokens exceeds the largest prompt bucket "
        f"{max(self.prompt_buckets)} (SamplerConfig.prompt_buckets)"
    )

  def cache_len(self, prompt_bucket: int) -> int:
    return prompt_bucket + sum(self.turn_budgets) + self.instruction_len * (self.num_turns - 1)


@flax.struct.dataclass
class Turn:
  """One attempt of every row. tokens/mask/logprobs*: [B*n, budget]."""

  tokens: Array
  mask: Array
  logprobs: Array  # log pi(token) at the sampling temperature (temperature 1 when greedy)
  logprobs_raw: Array  # log pi(token) at temperature 1

  @property
  def lengths(self) -> Array:
    return self.mask.sum(-1)


@flax.struct.dataclass
class SampleOutput:
  """Everything one sampler call produced; rows are prompt-major (b * n + j)."""

  turns: tuple[Turn, ...]
  prompt_lens: Array  # [B*n]
  instruction_lens: Array  # [B*n]
  cache: KVCache  # the final cache (aliases the donated input buffer)


def _token_logprobs(logits: Array, tokens: Array) -> Array:
  return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[:, None], -1)[:, 0]


def _filter_logits(logits: Array, top_k: int, top_p: float) -> Array:
  """Masks logits outside the top-k / nucleus top-p set with -inf."""
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, -1), -1)
    # Keep the smallest prefix whose mass reaches top_p (always at least one token).
    cutoff_idx = jnp.sum(cum < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, -1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def sample_token(logits: Array, key: Array, cfg: SamplerConfig):
  """logits [B,V] fp32 -> (token [B], logprob at temperature [B], raw logprob [B])."""
  logits = logits.astype(jnp.float32)
  if cfg.greedy:
    tok = jnp.argmax(logits, -1).astype(jnp.int32)
    lp = _token_logprobs(logits, tok)
    return tok, lp, lp
  scaled = logits / cfg.temperature
  tok = jax.random.categorical(key, _filter_logits(scaled, cfg.top_k, cfg.top_p)).astype(jnp.int32)
  return tok, _token_logprobs(scaled, tok), _token_logprobs(logits, tok)


def _last_index(lengths: Array) -> Array:
  """Each row's last valid position of a chunk of `lengths` [B] new tokens."""
  return jnp.maximum(lengths - 1, 0)


def _decode_turn(
    model: Transformer, cache: KVCache, logits: Array, key: Array, budget: int, cfg: SamplerConfig
):
  """Samples up to `budget` tokens per row, feeding each one back through the cache."""
  b = logits.shape[0]
  stop = jnp.asarray(cfg.stop_ids, jnp.int32)
  init = dict(
      step=jnp.int32(0),
      cache=cache,
      logits=logits,
      done=jnp.zeros((b,), bool),
      tokens=jnp.full((b, budget), cfg.pad_id, jnp.int32),
      mask=jnp.zeros((b, budget), bool),
      lp=jnp.zeros((b, budget), jnp.float32),
      lp_raw=jnp.zeros((b, budget), jnp.float32),
  )

  def cond(s):
    return (s["step"] < budget) & ~jnp.all(s["done"])

  def body(s):
    t = s["step"]
    tok, lp, lp_raw = sample_token(s["logits"], jax.random.fold_in(key, t), cfg)
    live = ~s["done"]
    tok = jnp.where(live, tok, cfg.pad_id)
    col = lambda arr, v: jax.lax.dynamic_update_slice(arr, v[:, None].astype(arr.dtype), (0, t))
    new_logits, new_cache = model(tok[:, None], cache=s["cache"], num_new=live.astype(jnp.int32))
    return dict(
        step=t + 1,
        cache=new_cache,
        logits=new_logits[:, 0],
        done=s["done"] | jnp.isin(tok, stop),
        tokens=col(s["tokens"], tok),
        mask=col(s["mask"], live),
        lp=col(s["lp"], jnp.where(live, lp, 0.0)),
        lp_raw=col(s["lp_raw"], jnp.where(live, lp_raw, 0.0)),
    )

  s = jax.lax.while_loop(cond, body, init) if budget else init
  return (
      Turn(tokens=s["tokens"], mask=s["mask"], logprobs=s["lp"], logprobs_raw=s["lp_raw"]),
      s["cache"],
  )


def sample_turns(
    model: Transformer,
    cache: KVCache,
    prompts: Array,
    prompt_lens: Array,
    instructions: Array,
    instruction_lens: Array,
    key: Array,
    cfg: SamplerConfig,
) -> SampleOutput:
  """The traced program. prompts [B,P] right-padded; instructions [B,I] (or [1,I])."""
  b = prompts.shape[0]
  chex.assert_rank([prompts, instructions], 2)  # [B, P], [B or 1, I]
  chex.assert_shape([prompt_lens], (b,))
  chex.assert_type([prompts, prompt_lens, instructions], jnp.int32)
  n = cfg.num_samples
  dtype = cache.k[0].dtype
  prefill = KVCache.init(model.cfg, b, cache.max_len, dtype)
  logits, prefill = model(
      prompts, cache=prefill, num_new=prompt_lens, logits_at=_last_index(prompt_lens)
  )
  last = jnp.repeat(logits[:, 0], n, axis=0)
  # Share the prefill among the n samples (the donated buffer holds the final cache).
  state = prefill.repeat(n)
  instructions = jnp.broadcast_to(instructions, (b, instructions.shape[1]))
  instruction_lens = jnp.broadcast_to(instruction_lens, (b,))
  rows = n  # rows per prompt so far
  turns = []
  for i, budget in enumerate(cfg.turn_budgets):
    if i:
      if cfg.followups > 1:  # siblings share the previous attempt's cache
        m = cfg.followups
        state, last = state.repeat(m), jnp.repeat(last, m, axis=0)
        turns = [jax.tree.map(lambda x: jnp.repeat(x, m, axis=0), t) for t in turns]
        rows *= m
      # Append the instruction after each row's own previous answer.
      row_instruction_lens = jnp.repeat(instruction_lens, rows)
      logits, state = model(
          jnp.repeat(instructions, rows, axis=0),
          cache=state,
          num_new=row_instruction_lens,
          logits_at=_last_index(row_instruction_lens),
      )
      last = logits[:, 0]
    turn, state = _decode_turn(model, state, last, jax.random.fold_in(key, i), budget, cfg)
    turns.append(turn)
  cache = jax.tree.map(lambda buf, x: x.astype(buf.dtype), cache, state)
  return SampleOutput(
      turns=tuple(turns),
      prompt_lens=jnp.repeat(prompt_lens, rows),
      instruction_lens=jnp.repeat(instruction_lens, rows),
      cache=cache,
  )


class Sampler:
  """Compiled multi-turn sampling for one model architecture and `SamplerConfig`.

  Usage:
    sampler = Sampler(model, cfg, mesh=mesh)      # mesh optional
    out = sampler(nnx.state(model), prompts, prompt_lens, instr, instr_lens, key)

  Parameters are passed on every call (the policy changes during training); the graph
  definition is fixed. With a mesh, the batch is split over the data axes and parameters
  keep the shardings they already have.
  """

  def __init__(
      self,
      model: Transformer,
      cfg: SamplerConfig,
      mesh=None,
      data_axes: Sequence[str] = ("data", "fsdp"),
  ):
    self.cfg = cfg
    self.model_cfg = model.cfg
    self.graphdef = nnx.graphdef(model)
    self.mesh = mesh
    self.data_axes = tuple(a for a in data_axes if mesh is not None and a in mesh.axis_names)
    self.trace_count = 0  # incremented at trace time: tests assert no recompilation.
    self._caches: dict[int, KVCache] = {}
    self._jitted = jax.jit(self._program, donate_argnums=(1,))

  def _program(self, params, cache, prompts, prompt_lens, instructions, instruction_lens, key):
    self.trace_count += 1
    model = nnx.merge(self.graphdef, params)
    return sample_turns(
        model, cache, prompts, prompt_lens, instructions, instruction_lens, key, self.cfg
    )

  def _batch_sharding(self, ndim: int):
    if self.mesh is None:
      return None
    spec = jax.sharding.PartitionSpec(self.data_axes or None, *([None] * (ndim - 1)))
    return jax.sharding.NamedSharding(self.mesh, spec)

  def _put(self, x):
    x = jnp.asarray(x)
    sharding = self._batch_sharding(x.ndim)
    return x if sharding is None else jax.device_put(x, sharding)

  def _cache(self, batch: int, prompt_bucket: int) -> KVCache:
    rows = batch * self.cfg.rows_per_prompt
    key = (rows, prompt_bucket)
    cache = self._caches.pop(key, None)
    if cache is None:
      cache = KVCache.init(
          self.model_cfg, rows, self.cfg.cache_len(prompt_bucket), self.cfg.cache_dtype
      )
      if self.mesh is not None:
        cache = jax.tree.map(self._put, cache)
    return cache

  def __call__(
      self, params, prompts, prompt_lens, instructions=None, instruction_lens=None, key=None
  ) -> SampleOutput:
    """prompts: [B, P<=bucket] right-padded ints; instructions: [I] or [B, I] (padded to
    `instruction_len`), required when there is more than one turn."""
    prompts = np.asarray(prompts, np.int32)
    prompt_lens = np.asarray(prompt_lens, np.int32)
    b = prompts.shape[0]
    if prompt_lens.shape != (b,):
      raise ValueError(f"prompt_lens has shape {prompt_lens.shape}, expected ({b},)")
    if (prompt_lens < 1).any() or (prompt_lens > prompts.shape[1]).any():
      raise ValueError(f"prompt_lens {prompt_lens.tolist()} must be in [1, {prompts.shape[1]}]")
    bucket = self.cfg.bucket(prompts.shape[1])
    prompts = np.pad(
        prompts, ((0, 0), (0, bucket - prompts.shape[1])), constant_values=self.cfg.pad_id
    )
    instr, instr_lens = self._instructions(instructions, instruction_lens, b)
    if key is None:
      key = jax.random.key(0)
    cache = self._cache(b, bucket)
    out = self._jitted(
        params,
        cache,
        self._put(prompts),
        self._put(prompt_lens),
        jnp.asarray(instr),
        jnp.asarray(instr_lens),
        key,
    )
    self._caches[(b * self.cfg.rows_per_prompt, bucket)] = out.cache
    return out

  def _instructions(self, instructions, instruction_lens, b):
    il = self.cfg.instruction_len
    if self.cfg.num_turns == 1 or il == 0:
      return np.zeros((1, il), np.int32), np.zeros((1,), np.int32)
    if instructions is None:
      raise ValueError(f"{self.cfg.num_turns} turns need instruction tokens")
    instr = np.asarray(instructions, np.int32)
    if instr.ndim == 1:
      instr = instr[None]
    if instruction_lens is None:
      if instr.shape[0] != 1:
        raise ValueError("per-row instructions need instruction_lens")
      instruction_lens = [instr.shape[1]]
    lens = np.asarray(instruction_lens, np.int32).reshape(-1)
    if instr.shape[1] > il or (lens > il).any() or (lens < 1).any():
      raise ValueError(
          f"instruction of {instr.shape[1]} tokens (lengths {lens.tolist()}) "
          f"does not fit SamplerConfig.instruction_len={il}"
      )
    if instr.shape[0] not in (1, b) or lens.shape[0] != instr.shape[0]:
      raise ValueError(
          f"instructions for {instr.shape[0]} rows, lengths for {lens.shape[0]};"
          f" expected 1 or {b}"
      )
    instr = np.pad(instr, ((0, 0), (0, il - instr.shape[1])), constant_values=self.cfg.pad_id)
    return instr, lens
