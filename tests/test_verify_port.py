"""eald-verify-port: the port's side, the comparison, the original's decoding; and, where the
original Video-LLaMA and its environment exist, the whole comparison (skipped otherwise: the
original cannot be downloaded on CI machines)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer

from eald.mllm.slow_llama_decode import SlowLlamaDecoder
from eald.mllm.verify import video_llama as verify

ORIGINAL = os.environ.get("EALD_VIDEO_LLAMA_REPO")  # a DAMO-NLP-SG/Video-LLaMA checkout
ORIGINAL_PY = os.environ.get("EALD_VIDEO_LLAMA_PYTHON")  # python of its environment


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    work = tmp_path_factory.mktemp("verify")
    spec = verify.prepare(work, seed=0, frames=3, clips=2, max_new_tokens=6, template="llama2",
                          sample_seed=0)  # fmt: skip
    return work, spec


def test_tokenizer_folder_has_both_files(prepared):
    work, spec = prepared
    folder = work / "files" / "llama-2-7b-chat-hf"
    assert (folder / "tokenizer.model").is_file() and (folder / "tokenizer.json").is_file()
    sp = SlowLlamaDecoder(folder).sp
    tok = AutoTokenizer.from_pretrained(folder)
    text = "Close your ears, open your eyes and you see that"
    assert tok(text, add_special_tokens=False).input_ids == sp.encode(text)


def test_slow_decode_is_sentencepiece_not_the_fast_decoder(prepared, tmp_path):
    work, _ = prepared
    folder = work / "files" / "llama-2-7b-chat-hf"
    dec = SlowLlamaDecoder(folder, ("<ImageHere>", "<AudioHere>"))
    sp, n = dec.sp, dec.sp.get_piece_size()
    b = {x: sp.piece_to_id(f"<0x{x:02X}>") for x in (0x7D, 0xD7)}
    e = sp.piece_to_id("e")
    # A valid byte ("}") before a stray lead byte survives; the fast decoder replaces both.
    assert dec([b[0x7D], b[0xD7], e]) == "}\ufffde"
    assert AutoTokenizer.from_pretrained(folder).decode([b[0x7D], b[0xD7], e]) == "\ufffd\ufffde"
    # Specials verbatim after one space; added tokens split the text, joined with spaces.
    # (4.28 puts that space before the run that precedes the special, not after it.)
    w = sp.encode("ears")
    assert sp.decode(w) == "ears"
    assert dec([*w, 2, *w]) == " ears</s>ears"
    assert dec([*w, n, *w]) == "ears <ImageHere> ears"
    # 4.28's clean-up (" ." -> ".") follows the folder's config, and is on when it is silent.
    spaced_dot = [*w, sp.piece_to_id("▁"), sp.piece_to_id(".")]
    assert sp.decode(spaced_dot) == "ears ." and dec.clean_up is False
    assert dec(spaced_dot) == "ears ."
    silent = tmp_path / "silent"
    silent.mkdir()
    (silent / "tokenizer.model").write_bytes((folder / "tokenizer.model").read_bytes())
    assert SlowLlamaDecoder(silent)(spaced_dot) == "ears."


def test_port_side_and_comparison(prepared):
    _, spec = prepared
    port = verify.run_port(spec)
    assert port["video_tokens"].shape == (1, 32, 64) and port["audio_tokens"].shape == (1, 8, 64)
    assert port["segment_ids"][0][0] == 1 and len(port["segment_ids"]) == 3  # BOS, 2 media
    assert 1 <= len(port["greedy_ids"]) <= 6
    rows = verify.compare(port, port, tol=1e-4)
    assert [r["stage"] for r in rows] == list(verify.STAGES) and all(r["ok"] for r in rows)
    # The original returns [BOS] + new ids for inputs_embeds; that BOS is not a difference.
    bos = dict(port, greedy_ids=[1, *port["greedy_ids"]])
    assert all(r["ok"] for r in verify.compare(bos, port, tol=1e-4))
    bad = dict(port, qformer=port["qformer"] + 1e-3 * (port["qformer"] == port["qformer"].max()),
               sampled_ids=[*port["sampled_ids"][:2], -1])  # fmt: skip
    rows = {r["stage"]: r for r in verify.compare(bad, port, tol=1e-4)}
    assert not rows["qformer"]["ok"] and rows["qformer"]["max_abs_diff"] == pytest.approx(
        1e-3, rel=1e-3
    )
    assert not rows["sampled_ids"]["ok"] and "from item 2" in rows["sampled_ids"]["detail"]
    assert sum(not r["ok"] for r in rows.values()) == 2
    assert "| qformer | DIFFERS |" in verify.table(list(rows.values()))


def test_cli_names_a_wrong_checkout(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eald.mllm.verify.cli", "--original",
                           str(tmp_path), "--python", sys.executable],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0 and f"--original {tmp_path}: no video_llama" in proc.stderr


@pytest.mark.skipif(not (ORIGINAL and ORIGINAL_PY), reason="set EALD_VIDEO_LLAMA_REPO and "
                    "EALD_VIDEO_LLAMA_PYTHON to compare with the original")  # fmt: skip
def test_equal_to_the_original(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eald.mllm.verify.cli", "--original", ORIGINAL,
                           "--python", ORIGINAL_PY, "--workdir", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = torch.load(tmp_path / "original.pt", weights_only=False)
    assert rows["versions"]["transformers"] == "4.28.0"
    assert "| decoded | ok |" in proc.stdout and "DIFFERS" not in proc.stdout
