"""Tokenizer API on a tiny SentencePiece model trained in the test (no GGUF needed)."""

import io

import numpy as np
import pytest
import sentencepiece as spm

from score_jax.tokenizer import Tokenizer

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there",
    "numbers 12345 and 678",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "line one\nline two  with  spaces",
] * 20
PAD, EOS, BOS, UNK, SOT, EOT = 0, 1, 2, 3, 4, 5


def train(**kw) -> bytes:
  out = io.BytesIO()
  args = dict(
      vocab_size=340,
      model_type="bpe",
      pad_id=PAD,
      eos_id=EOS,
      bos_id=BOS,
      unk_id=UNK,
      control_symbols=["<start_of_turn>", "<end_of_turn>"],
      byte_fallback=True,
      add_dummy_prefix=False,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      minloglevel=2,
  )
  args.update(kw)
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=out, **args)
  return out.getvalue()


@pytest.fixture(scope="module")
def proto() -> bytes:
  return train()


@pytest.fixture(scope="module")
def tok(proto) -> Tokenizer:
  return Tokenizer.from_proto(proto)


def test_special_ids(tok):
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (PAD, EOS, BOS)
  assert tok.stop_ids == (EOS, EOT)
  assert tok.piece_id("<end_of_turn>") == EOT and tok.piece_id("<nope>") is None
  assert tok.special_ids["<start_of_turn>"] == SOT and tok.special_ids["<unk>"] == UNK
  assert tok.vocab_size == 340
  assert "stop_ids=(1, 5)" in repr(tok)


def test_encode_bos_eos_and_special_text(tok):
  plain = tok.encode("hello world", add_bos=False)
  assert plain and BOS not in plain and EOS not in plain
  assert tok.encode("hello world", add_bos=True) == [BOS] + plain
  assert tok.encode("hello world", add_bos=True, add_eos=True) == [BOS] + plain + [EOS]
  # Special-token text maps to single ids; the text between goes through SentencePiece.
  ids = tok.encode("<s><start_of_turn>hello world<end_of_turn>\n", add_bos=False)
  assert ids[:2] == [BOS, SOT] and ids[2 : 2 + len(plain)] == plain and ids[2 + len(plain)] == EOT
  literal = tok.encode("<start_of_turn>", add_bos=False, parse_special=False)
  assert SOT not in literal and len(literal) > 1
  # Unknown angle-bracket text is left to SentencePiece.
  assert tok.decode(tok.encode("<a> <b>", add_bos=False)) == "<a> <b>"
  assert tok.encode("", add_bos=True) == [BOS]
  # BOS already written as text (as prompts.render_turn1 does) is not doubled.
  assert tok.encode("<s>hello world", add_bos=True) == [BOS] + plain


def test_round_trip(tok):
  for text in [
      "hello world",
      "numbers 12345 and 678",
      "line one\nline two  with  spaces",
      " leading and trailing ",
      "héllo wörld ✓",
  ]:
    assert tok.decode(tok.encode(text, add_bos=True)) == text


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_batch_padding(tok, side):
  texts = ["hello", "the quick brown fox", "a"]
  tokens, mask = tok.encode_batch(texts, 16, add_bos=True, pad_side=side)
  assert tokens.shape == mask.shape == (3, 16)
  assert tokens.dtype == np.int32 and mask.dtype == np.bool_
  for r, text in enumerate(texts):
    ids = tok.encode(text, add_bos=True)
    n = len(ids)
    assert mask[r].sum() == n
    if side == "right":
      assert mask[r, :n].all() and not mask[r, n:].any()
    else:
      assert mask[r, 16 - n :].all() and not mask[r, : 16 - n].any()
    assert tokens[r][mask[r]].tolist() == ids
    assert (tokens[r][~mask[r]] == PAD).all()
    assert tokens[r][mask[r]][0] == BOS
  assert tok.decode_batch(tokens, mask) == texts
  assert tok.decode_batch(tokens) == texts  # padding is skipped anyway


def test_encode_batch_too_long(tok):
  texts = ["hello", "the quick brown fox jumps over the lazy dog"]
  n = len(tok.encode(texts[1], add_bos=True))
  with pytest.raises(ValueError, match=rf"row 1 has {n} tokens, more than max_len=6"):
    tok.encode_batch(texts, 6, add_bos=True)
  full = tok.encode(texts[1], add_bos=True)
  tokens, mask = tok.encode_batch(texts, 6, add_bos=True, truncate=True)
  assert tokens[1].tolist() == full[:6] and mask[1].all()
  tokens, mask = tok.encode_batch(
      texts, 6, add_bos=True, truncate=True, truncate_side="left", pad_side="left"
  )
  assert tokens[1].tolist() == full[-6:]
  with pytest.raises(ValueError, match="pad_side"):
    tok.encode_batch(texts, 6, add_bos=True, pad_side="middle")
  with pytest.raises(TypeError):
    tok.encode_batch("hello", 6, add_bos=True)


def test_decode_stops_at_stop_ids_and_skips_pad(tok):
  hello = tok.encode("hello", add_bos=False)
  world = tok.encode(" world", add_bos=False)
  assert tok.decode([BOS] + hello + [PAD] + world + [EOS] + hello) == "hello world"
  assert tok.decode(hello + [EOT] + world) == "hello"
  assert tok.decode(np.asarray([PAD, PAD] + hello + [EOS, PAD], np.int32)) == "hello"
  assert tok.decode(hello + [EOS] + world, stop_at_stop=False) == "hello world"
  assert tok.decode([]) == ""


def test_from_file_and_overrides(proto, tmp_path):
  path = tmp_path / "tiny.model"
  path.write_bytes(proto)
  tok = Tokenizer.from_file(path, stop_ids=[EOS], pad_id=UNK)
  assert tok.stop_ids == (EOS,) and tok.pad_id == UNK
  assert tok.decode(tok.encode("hello", add_bos=True) + [EOT]) == "hello"  # EOT not a stop
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Tokenizer.from_file(tmp_path / "missing.model")


def test_model_without_pad_and_non_angle_specials():
  tok = Tokenizer.from_proto(
      train(pad_id=-1, eos_id=1, bos_id=2, unk_id=0, control_symbols=["[SEP]", "<end_of_turn>"])
  )
  assert tok.pad_id == tok.eos_id == 1  # no pad piece: pad with EOS
  sep = tok.piece_id("[SEP]")
  ids = tok.encode("hello[SEP]world", add_bos=False)
  assert sep in ids and tok.decode(ids) == "helloworld"
