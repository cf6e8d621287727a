"""SentencePiece tokenizer wrapper: special ids, stop ids, batched padding, decoding.

    tok = Tokenizer.from_file("tokenizer.model")           # or Tokenizer.from_proto(bytes)
    ids = tok.encode("<bos><start_of_turn>user\\nHi", add_bos=False)
    tokens, mask = tok.encode_batch(texts, max_len=512, add_bos=True, pad_side="left")
    text = tok.decode(sampled_ids)          # stops at the first stop id, skips padding

Special tokens written as text (``<bos>``, ``<start_of_turn>``, ``<end_of_turn>``, ...: every
CONTROL / UNKNOWN piece of the model) are mapped to their single ids, as Hugging Face tokenizers
do, so that chat-template strings from `score_jax.prompts` (which already contain the ``<bos>``
text) tokenize as the model was trained; the text between them goes through SentencePiece.
Pass ``parse_special=False`` to tokenize such text literally.

`score_jax.checkpoints.gguf.tokenizer_from_gguf` rebuilds a SentencePiece model from a GGUF
vocabulary and returns this class.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Literal, Sequence

import numpy as np
import sentencepiece as spm

# End-of-turn markers of the supported chat families; those present in a vocabulary join EOS
# in `Tokenizer.stop_ids`.
END_OF_TURN_PIECES = (
    "<end_of_turn>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
)


class Tokenizer:
  """A `sentencepiece.SentencePieceProcessor` with the ids and batching the sampler needs.

  Attributes:
    sp: the wrapped processor.
    bos_id, eos_id: the model's BOS / EOS ids (-1 when the model has none).
    pad_id: padding id used by `encode_batch`: the model's pad piece, else EOS, else 0.
    stop_ids: ids that end a turn: EOS plus the family's end-of-turn token(s)
      (Gemma ``<end_of_turn>``, Llama 3 ``<|eot_id|>``, ChatML ``<|im_end|>``) when present.
    special_ids: text of every control/unknown piece -> its id (parsed out of input text).
  """

  def __init__(
      self,
      sp: spm.SentencePieceProcessor,
      *,
      stop_ids: Iterable[int] | None = None,
      pad_id: int | None = None,
  ):
    self.sp = sp
    self.bos_id = int(sp.bos_id())
    self.eos_id = int(sp.eos_id())
    if pad_id is None:
      pad_id = int(sp.pad_id())
      if pad_id < 0:
        pad_id = self.eos_id if self.eos_id >= 0 else 0
    self.pad_id = int(pad_id)
    n = sp.get_piece_size()
    self.special_ids: dict[str, int] = {}
    for i in range(n):
      if sp.is_control(i) or sp.is_unknown(i):
        piece = sp.id_to_piece(i)
        if piece:
          self.special_ids.setdefault(piece, i)
    if stop_ids is None:
      found = [self.eos_id] if self.eos_id >= 0 else []
      for piece in END_OF_TURN_PIECES:
        i = self.piece_id(piece)
        if i is not None and i not in found:
          found.append(i)
      stop_ids = found
    self.stop_ids: tuple[int, ...] = tuple(int(i) for i in stop_ids)
    self._stop_set = frozenset(self.stop_ids)
    self._special_re = _special_regex(self.special_ids)

  # --------------------------------------------------------------------------- constructors

  @classmethod
  def from_file(cls, model_path: str | os.PathLike, **kw) -> "Tokenizer":
    """Loads a SentencePiece ``.model`` file."""
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
      raise FileNotFoundError(f"{model_path}: SentencePiece model file does not exist")
    sp = spm.SentencePieceProcessor()
    sp.load(model_path)
    return cls(sp, **kw)

  @classmethod
  def from_proto(cls, proto: bytes, **kw) -> "Tokenizer":
    """Loads a serialized SentencePiece ``ModelProto``."""
    sp = spm.SentencePieceProcessor()
    sp.load_from_serialized_proto(proto)
    return cls(sp, **kw)

  # --------------------------------------------------------------------------- vocabulary

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def piece_id(self, piece: str) -> int | None:
    """Id of a piece, or None if the vocabulary does not have it."""
    i = self.sp.piece_to_id(piece)
    return i if 0 <= i < self.vocab_size and self.sp.id_to_piece(i) == piece else None

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))

  # --------------------------------------------------------------------------- encoding

  def encode(
      self, text: str, *, add_bos: bool, add_eos: bool = False, parse_special: bool = True
  ) -> list[int]:
    """Token ids of `text`; special-token text (``<start_of_turn>``...) maps to single ids.

    `add_bos` prepends BOS unless the text already starts with the BOS text (``<bos>``, as
    `score_jax.prompts.render_turn1` writes it), so BOS is never doubled.
    """
    ids: list[int] = []
    if parse_special and self._special_re is not None:
      pos = 0
      for m in self._special_re.finditer(text):
        i = self.special_ids.get(m.group(0))
        if i is None:
          continue
        if m.start() > pos:
          ids.extend(self.sp.encode(text[pos : m.start()]))
        ids.append(i)
        pos = m.end()
      if pos < len(text):
        ids.extend(self.sp.encode(text[pos:]))
    elif text:
      ids.extend(self.sp.encode(text))
    if add_bos and self.bos_id >= 0 and ids[:1] != [self.bos_id]:
      ids.insert(0, self.bos_id)
    if add_eos and self.eos_id >= 0:
      ids.append(self.eos_id)
    return ids

  def encode_batch(
      self,
      texts: Sequence[str],
      max_len: int,
      *,
      add_bos: bool,
      add_eos: bool = False,
      pad_side: Literal["right", "left"] = "right",
      truncate: bool = False,
      truncate_side: Literal["right", "left"] = "right",
      parse_special: bool = True,
  ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes and pads to exactly `max_len` columns.

    Returns (tokens int32 [B, max_len], mask bool [B, max_len]); padding holds `pad_id` and
    mask False. A text longer than `max_len` tokens raises ValueError naming the row, unless
    `truncate=True`, which drops tokens from the end ('right') or the start ('left').
    """
    if pad_side not in ("right", "left"):
      raise ValueError(f"pad_side={pad_side!r}: expected 'right' or 'left'")
    if truncate_side not in ("right", "left"):
      raise ValueError(f"truncate_side={truncate_side!r}: expected 'right' or 'left'")
    if isinstance(texts, str):
      raise TypeError("encode_batch takes a sequence of strings, got a single str")
    if max_len <= 0:
      raise ValueError(f"max_len={max_len}: must be positive")
    b = len(texts)
    tokens = np.full((b, max_len), self.pad_id, np.int32)
    mask = np.zeros((b, max_len), bool)
    for r, text in enumerate(texts):
      ids = self.encode(text, add_bos=add_bos, add_eos=add_eos, parse_special=parse_special)
      if len(ids) > max_len:
        if not truncate:
          raise ValueError(
              f"encode_batch: row {r} has {len(ids)} tokens, more than "
              f"max_len={max_len} (text starts {text[:40]!r}); pass "
              "truncate=True or raise max_len"
          )
        ids = ids[:max_len] if truncate_side == "right" else ids[-max_len:]
      n = len(ids)
      sl = slice(0, n) if pad_side == "right" else slice(max_len - n, max_len)
      tokens[r, sl] = ids
      mask[r, sl] = True
    return tokens, mask

  # --------------------------------------------------------------------------- decoding

  def decode(self, ids: Iterable[int], *, stop_at_stop: bool = True) -> str:
    """Text of `ids` up to (excluding) the first stop id; padding ids are skipped.

    Control pieces (``<bos>``, ``<start_of_turn>``...) decode to nothing.
    """
    out: list[int] = []
    for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
      if stop_at_stop and i in self._stop_set:
        break
      if i == self.pad_id or i < 0 or i >= self.vocab_size:
        continue
      out.append(i)
    return self.sp.decode(out)

  def decode_batch(self, tokens, mask=None, **kw) -> list[str]:
    """`decode` of each row of a [B, L] array, keeping only positions where `mask` is True."""
    tokens = np.asarray(tokens)
    if mask is None:
      return [self.decode(row, **kw) for row in tokens]
    mask = np.asarray(mask, bool)
    return [self.decode(row[m], **kw) for row, m in zip(tokens, mask)]

  def __repr__(self) -> str:
    return (
        f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
        f"eos_id={self.eos_id}, pad_id={self.pad_id}, stop_ids={self.stop_ids})"
    )


def _special_regex(special: dict[str, int]) -> re.Pattern | None:
  """A regex whose matches are candidate special-token strings (checked against the dict)."""
  if not special:
    return None
  if all(
      len(s) > 2 and s[0] == "<" and s[-1] == ">" and "<" not in s[1:-1] and ">" not in s[1:-1]
      for s in special
  ):
    return re.compile(r"<[^<>]+>")  # fast path: one scan, dict lookup per candidate
  return re.compile("|".join(re.escape(s) for s in sorted(special, key=len, reverse=True)))
