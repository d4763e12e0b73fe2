"""CPU/CUDA agreement of the trie-constrained beam search and of one training step's loss and gradients
(the prefix index, the Collaborative Tokenizer and the token losses have theirs in test_trie / test_tca).
Skipped without a CUDA GPU; `scripts/gpu_run.sh` runs them first on the accelerator."""

import pytest
import torch
from helpers.generative import LLAMA_TINY, TIGER_TINY, examples, semantic_ids, titles

from semrec.decoding import beam_search
from semrec.data.examples import ExampleTable
from semrec.models import build_model
from semrec.tca import CollaborativeTokenizer
from semrec.training import TrainConfig, token_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
B = 8


def _setup(name, cfg, tok, seed=0):
    model = build_model(name, tok, cfg, seed=seed).eval()
    table = ExampleTable.from_examples(examples(B, tok.codes.shape[0], seed=seed + 3), 6)
    return model, table


@pytest.mark.parametrize("name,cfg,tok", [("tiger", TIGER_TINY, semantic_ids(60)), ("decoder", LLAMA_TINY, titles(60))])
def test_cuda_beam_search_matches_cpu(name, cfg, tok):
    torch.backends.cuda.matmul.allow_tf32 = False
    model, table = _setup(name, cfg, tok)
    batch = model.collate(table, torch.arange(B), with_targets=False)
    cpu = beam_search(model, batch, num_beams=6)
    gpu_model = model.to("cuda")
    gpu = beam_search(gpu_model, batch.to("cuda"), num_beams=6)
    assert torch.equal(gpu.items.cpu(), cpu.items)
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, atol=1e-4, rtol=1e-4)


def test_cuda_tca_training_loss_and_gradients_match_cpu():
    torch.backends.cuda.matmul.allow_tf32 = False
    tok = semantic_ids(60)
    model, table = _setup("tiger", TIGER_TINY, tok)  # eval mode: no dropout, so both devices compute the same
    torch.manual_seed(0)
    teacher = torch.randn(B, tok.codes.shape[0]) * 3
    cfg = TrainConfig(loss="tca", alpha=0.3, tau=1.5, msl=True)
    batch = model.collate(table, torch.arange(B))

    def grads(m, b, t):
        m.zero_grad()
        index = m.prefix_index()
        loss = token_loss(cfg, m(b), b.labels, b.target_tokens, index=index, tokenizer=CollaborativeTokenizer(index),
                          item_logits=t)
        loss.backward()
        return loss.detach().cpu(), {k: p.grad.detach().cpu() for k, p in m.named_parameters() if p.grad is not None}

    l_cpu, g_cpu = grads(model, batch, teacher)
    l_gpu, g_gpu = grads(model.to("cuda"), batch.to("cuda"), teacher.cuda())
    torch.testing.assert_close(l_gpu, l_cpu, atol=1e-5, rtol=1e-5)
    assert g_cpu.keys() == g_gpu.keys() and g_cpu
    for k in g_cpu:
        torch.testing.assert_close(g_gpu[k], g_cpu[k], atol=1e-4, rtol=1e-3)
