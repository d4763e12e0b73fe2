"""LETTER (Wang et al., CIKM 2024): RQ-VAE + collaborative regulariser + diversity regulariser.

- Collaborative: in-batch InfoNCE between the quantized item representation x_q (B, e) and the item's
  CF teacher embedding (B, e): `cf_weight * CE(sim(x_q, cf) / cf_temperature, diag)`. CF embeddings of
  another width are mapped to the latent width by a fixed PCA projection (zero-padded when narrower), so
  the targets stay the teacher's geometry; "cosine" similarity makes the weight independent of scale
  (the official code uses a raw dot product: cf_similarity "dot").
- Diversity: every `div_every` epochs each level's codebook is clustered into `div_clusters` groups
  (k-means); for an item with code c, a random other code of c's cluster is the positive and the
  rest of the codebook (c itself masked) the negatives of a softmax over codeword similarities,
  `div_weight * CE`, which spreads assignments over the codebook (the official code clusters with
  constrained k-means; plain k-means here). Applied at every level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from semrec.errors import SemrecError
from semrec.quantizers.base import register_quantizer
from semrec.quantizers.rqkmeans import kmeans
from semrec.quantizers.rqvae import RQVAE, RQVAEConfig


@dataclass
class LetterConfig(RQVAEConfig):
    cf_weight: float = 0.1
    cf_temperature: float = 0.1
    cf_similarity: Literal["cosine", "dot"] = "cosine"
    div_weight: float = 0.01
    div_clusters: int = 10
    div_every: int = 10  # epochs between re-clusterings of the codebooks
    div_temperature: float = 1.0


def pca_projection(x: np.ndarray, dim: int) -> np.ndarray:
    """(d, dim) matrix mapping centred rows of x onto their top `dim` principal directions
    (identity when d == dim, zero-padded columns when d < dim); signs fixed deterministically."""
    d = x.shape[1]
    if d == dim:
        return np.eye(d, dtype=np.float32)
    if d < dim:
        return np.eye(d, dim, dtype=np.float32)
    xc = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    v = vt[:dim].T
    signs = np.sign(v[np.abs(v).argmax(0), np.arange(dim)])
    signs[signs == 0] = 1
    return (v * signs).astype(np.float32)


def sample_cluster_positives(codes: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """For codes (B,) with cluster labels (K,): a uniformly random OTHER code of the same cluster.

    Returns (positives (B,), valid (B,) bool: False where the code is alone in its cluster)."""
    k = labels.numel()
    order = torch.argsort(labels * k + torch.arange(k, device=labels.device))  # codes grouped by cluster
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k, device=labels.device)
    n_clusters = int(labels.max()) + 1
    size = torch.bincount(labels, minlength=n_clusters)
    start = torch.cumsum(size, 0) - size
    g = labels[codes]
    s = size[g]
    valid = s > 1
    pos_in = rank[codes] - start[g]  # position of the code within its cluster
    r = (torch.rand(codes.shape, generator=gen).to(codes.device) * (s - 1).clamp_min(1)).long()
    r = torch.minimum(r, (s - 2).clamp_min(0))
    r = r + (r >= pos_in).long()
    return order[(start[g] + r).clamp(max=k - 1)], valid


@register_quantizer("letter")
class Letter(RQVAE):
    """RQ-VAE with LETTER's collaborative and diversity regularisers (needs CF embeddings to fit)."""

    config_class = LetterConfig

    def _setup_extra(self, emb: torch.Tensor, cf: torch.Tensor | None, device: torch.device) -> None:
        cfg = self.config
        if cf is None:
            raise SemrecError("letter: needs CF item embeddings to fit (pass a teacher with --teacher DIR or "
                              "a .npy file with --cf-emb FILE)")
        cf_np = cf.cpu().numpy()
        proj = pca_projection(cf_np, cfg.latent_dim)
        target = torch.from_numpy((cf_np - cf_np.mean(0, keepdims=True)) @ proj).to(device)
        if cfg.cf_similarity == "cosine":
            target = F.normalize(target, dim=-1)
        self._cf_target = target
        self._div_labels: list[torch.Tensor] = []
        self._div_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.fit_info["cf_dim"] = int(cf_np.shape[1])
        self.fit_info["cf_projection"] = "identity" if cf_np.shape[1] == cfg.latent_dim else \
            f"PCA {cf_np.shape[1]}->{cfg.latent_dim}" if cf_np.shape[1] > cfg.latent_dim else "zero-pad"

    def _on_epoch_start(self, epoch: int) -> None:
        cfg = self.config
        if cfg.div_weight <= 0 or epoch % max(1, cfg.div_every) != 0:
            return
        labels = []
        for level, cb in enumerate(self.model.codebooks):
            c = cb.detach().cpu().numpy().astype(np.float32)
            m = min(cfg.div_clusters, len(c))
            if m < 2:
                labels.append(torch.zeros(len(c), dtype=torch.long, device=cb.device))
                continue
            cent = kmeans(c, m, niter=20, seed=cfg.seed + 100 * epoch + level)
            lab = ((c[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
            labels.append(torch.from_numpy(lab.astype(np.int64)).to(cb.device))
        self._div_labels = labels

    def _extra_losses(self, batch: torch.Tensor, idx: torch.Tensor, out: dict, epoch: int) -> dict:
        cfg = self.config
        losses = {}
        if cfg.cf_weight > 0:
            q = out["x_q"]
            t = self._cf_target[idx]
            if cfg.cf_similarity == "cosine":
                q = F.normalize(q, dim=-1)
            logits = q @ t.T / cfg.cf_temperature
            labels = torch.arange(len(idx), device=logits.device)
            losses["cf"] = cfg.cf_weight * F.cross_entropy(logits, labels)
        if cfg.div_weight > 0 and self._div_labels:
            total = batch.new_zeros(())
            for level, cb in enumerate(self.model.codebooks):
                codes = out["codes"][:, level]
                pos, valid = sample_cluster_positives(codes, self._div_labels[level], self._div_gen)
                if not bool(valid.any()):
                    continue
                sim = out["levels"][level] @ cb.T / cfg.div_temperature  # (B, K)
                sim = sim.masked_fill(F.one_hot(codes, cb.shape[0]).bool(), float("-inf"))
                total = total + F.cross_entropy(sim[valid], pos[valid])
            losses["div"] = cfg.div_weight * total
        return losses
