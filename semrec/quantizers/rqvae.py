"""RQ-VAE as in TIGER (Rajput et al. 2023): MLP encoder -> L residual codebooks -> MLP decoder.

Loss per batch: MSE(decoder(x_q), x) + quant_weight * sum_l [ ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2 ]
where r_l is the level-l residual of the latent z and e_l its nearest codeword. Gradients pass the
quantizer with the straight-through estimator (x_q = z + sg(sum_l e_l - z)) or, as an option, the rotation
trick (Fifty et al. 2024): x_q = sg(s R) z with R the rotation taking z to sum_l e_l and s the norm ratio.
Codebooks start from k-means (faiss) on the latents of the whole set or of the first batch, and codes
unused for a whole epoch are restarted on random residuals of the last batch ("dead-code restarts").
Training shows a tqdm bar and records a per-epoch loss curve in `fit_info["history"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semrec.errors import SemrecError
from semrec.quantizers.base import Quantizer, register_quantizer
from semrec.quantizers.rqkmeans import kmeans


@dataclass
class RQVAEConfig:
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    latent_dim: int = 32
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    activation: Literal["relu", "silu", "gelu"] = "relu"
    dropout: float = 0.0
    epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 0.25  # commitment weight
    quant_weight: float = 1.0
    estimator: Literal["ste", "rotation"] = "ste"
    kmeans_init: Literal["all", "first_batch", "none"] = "all"
    kmeans_iters: int = 25
    dead_code_restart: bool = True
    restart_until: float = 0.9  # restarts happen in the first fraction of the epochs only
    grad_clip: float | None = 1.0
    standardize: bool = True  # train on (x - mean) / global std so loss weights do not depend on the scale
    seed: int = 0
    device: str = "cpu"  # "auto" picks CUDA when present


def mlp(dims: list[int], activation: str, dropout: float) -> nn.Sequential:
    act = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}[activation]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        if i > 0:
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[i], dims[i + 1]))
    return nn.Sequential(*layers)


def sq_dist(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(B, d), (K, d) -> (B, K) squared Euclidean distances."""
    return (x.pow(2).sum(1, keepdim=True) - 2.0 * x @ codebook.T + codebook.pow(2).sum(1)[None, :]).clamp_min(0)


def rotation_trick(z: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Value q, gradient through the fixed rotation+scaling that maps z onto q (Fifty et al. 2024).

    With u = z/|z|, v = q/|q|, w = (u+v)/|u+v|: R = I - 2ww^T + 2vu^T maps u to v; returns (|q|/|z|) R z."""
    zn = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    qn = q.norm(dim=-1, keepdim=True)
    u = (z / zn).detach()
    v = (q / qn.clamp_min(eps)).detach()
    w = F.normalize(u + v, dim=-1, eps=eps).detach()
    rz = z - 2.0 * (z * w).sum(-1, keepdim=True) * w + 2.0 * (z * u).sum(-1, keepdim=True) * v
    out = rz * (qn / zn).detach()
    # exactly opposite vectors have no unique rotation: fall back to the straight-through estimator there
    bad = ((u + v).norm(dim=-1, keepdim=True) < 1e-4)
    return torch.where(bad, z + (q - z).detach(), out)


class RQVAEModel(nn.Module):
    """Encoder, residual codebooks (one (K_l, latent) parameter per level), decoder."""

    def __init__(self, in_dim: int, cfg: RQVAEConfig) -> None:
        super().__init__()
        dims = [in_dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = mlp(dims, cfg.activation, cfg.dropout)
        self.decoder = mlp(dims[::-1], cfg.activation, cfg.dropout)
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(k, cfg.latent_dim) * 0.01) for k in cfg.codebook_sizes])
        # input standardisation (mean vector, one global scale): identity until set by fit()
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(()))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_scale

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.in_scale + self.in_mean

    def quantize(self, z: torch.Tensor, *, beta: float = 0.25, estimator: str = "ste") -> dict:
        """Residual quantization of latents z (B, e). Returns x_q (B, e) with the estimator's gradient,
        codes (B, L), quant_loss, per-level codewords `levels` [(B, e)] (grad to codebooks), residuals."""
        resid = z
        total = torch.zeros_like(z)
        codes, levels, residuals = [], [], []
        qloss = z.new_zeros(())
        for cb in self.codebooks:
            idx = sq_dist(resid.detach(), cb.detach()).argmin(1)
            q = cb[idx]
            qloss = qloss + F.mse_loss(q, resid.detach()) + beta * F.mse_loss(resid, q.detach())
            codes.append(idx)
            levels.append(q)
            residuals.append(resid.detach())
            total = total + q.detach()
            resid = resid - q.detach()
        x_q = rotation_trick(z, total) if estimator == "rotation" else z + (total - z).detach()
        return {"x_q": x_q, "codes": torch.stack(codes, 1), "quant_loss": qloss, "levels": levels,
                "residuals": residuals, "last_residual": residuals[-1]}


def plot_history(history: list[dict], path, *, title: str = "") -> None:
    """Loss terms (log scale) and codes used per level against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semrec.artifacts import atomic_file

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in [k for k in history[0] if k not in ("epoch", "codes_used", "restarted")]:
        vals = [h.get(key) for h in history]
        if all(isinstance(v, (int, float)) and v > 0 for v in vals):
            a.plot(epochs, vals, label=key)
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.legend(fontsize=7)
    a.set_title("losses")
    for l in range(len(history[0]["codes_used"])):
        b.plot(epochs, [h["codes_used"][l] for h in history], label=f"level {l}")
    b.set_xlabel("epoch")
    b.set_title("codes used per epoch")
    b.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


@register_quantizer("rqvae")
class RQVAE(Quantizer):
    """TIGER's RQ-VAE semantic-ID quantizer (see module docstring)."""

    config_class = RQVAEConfig

    def __init__(self, config=None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.model: RQVAEModel | None = None

    # -------------------------------------------------------------------------------- hooks (LETTER)
    def _setup_extra(self, emb: torch.Tensor, cf: torch.Tensor | None, device: torch.device) -> None:
        """Called once before training (LETTER prepares its CF targets here)."""

    def _extra_losses(self, batch: torch.Tensor, idx: torch.Tensor, out: dict, epoch: int) -> dict:
        """Additional named losses (already weighted) for a batch of item rows `idx`."""
        return {}

    def _on_epoch_start(self, epoch: int) -> None:
        """Per-epoch hook (LETTER re-clusters its codebooks here)."""

    # ------------------------------------------------------------------------------------- training
    def _device(self) -> torch.device:
        from semrec.runtime import resolve_device

        return resolve_device(self.config.device)

    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor) -> None:
        cfg = self.config
        z = self._latents(x)
        if cfg.kmeans_init == "first_batch":
            g = torch.Generator().manual_seed(cfg.seed)
            z = z[torch.randperm(len(z), generator=g)[: max(cfg.batch_size, max(self.codebook_sizes))].to(z.device)]
        resid = z.detach().cpu().numpy().astype(np.float32)
        for level, cb in enumerate(self.model.codebooks):
            c = kmeans(resid, cb.shape[0], niter=cfg.kmeans_iters, seed=cfg.seed + level)
            ct = torch.from_numpy(c)
            idx = sq_dist(torch.from_numpy(resid), ct).argmin(1)
            resid = resid - c[idx.numpy()]
            cb.data.copy_(ct.to(cb.device))

    @torch.no_grad()
    def _latents(self, x: torch.Tensor, step: int = 8192) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        z = torch.cat([self.model.encoder(x[i:i + step]) for i in range(0, len(x), step)])
        self.model.train(was)
        return z

    def _fit(self, emb: np.ndarray, cf_emb: np.ndarray | None) -> None:
        from tqdm.auto import tqdm

        from semrec.runtime import seed_everything

        cfg = self.config
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise SemrecError(f"{self.name}: epochs and batch_size must be positive")
        gen = seed_everything(cfg.seed)
        device = self._device()
        x = torch.from_numpy(np.array(emb, dtype=np.float32, copy=True)).to(device)
        cf = None if cf_emb is None else torch.from_numpy(np.ascontiguousarray(cf_emb, dtype=np.float32)).to(device)
        self.model = RQVAEModel(x.shape[1], cfg).to(device)
        if cfg.standardize:
            mean = x.mean(0)
            self.model.in_mean.copy_(mean)
            self.model.in_scale.copy_((x - mean).pow(2).mean().sqrt().clamp_min(1e-12))
        x = self.model.standardize(x)
        if cfg.kmeans_init != "none":
            self._kmeans_init(x)
        self._setup_extra(x, cf, device)
        params = [p for p in self.parameters_for_training()]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n, sizes = len(x), self.codebook_sizes
        history, restarts_total = [], 0
        restart_last_epoch = int(cfg.restart_until * cfg.epochs)
        bar = tqdm(range(cfg.epochs), desc=f"{self.name} fit", unit="epoch", leave=False, disable=not self.progress)
        for epoch in bar:
            self.model.train()
            self._on_epoch_start(epoch)
            perm = torch.randperm(n, generator=gen).to(device)
            usage = [torch.zeros(k, dtype=torch.long, device=device) for k in sizes]
            sums: dict[str, float] = {}
            steps = 0
            last_out = None
            for lo in range(0, n, cfg.batch_size):
                idx = perm[lo:lo + cfg.batch_size]
                if len(idx) < 2:
                    continue
                batch = x[idx]
                out = self.forward_losses(batch)
                extra = self._extra_losses(batch, idx, out, epoch)
                loss = out["recon"] + cfg.quant_weight * out["quant_loss"] + sum(extra.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                for l in range(len(sizes)):
                    usage[l] += torch.bincount(out["codes"][:, l], minlength=sizes[l])
                for k, v in {"loss": loss, "recon": out["recon"], "quant": out["quant_loss"], **extra}.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                steps += 1
                last_out = out
            row = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()},
                   "codes_used": [int((u > 0).sum()) for u in usage]}
            if cfg.dead_code_restart and epoch < restart_last_epoch and last_out is not None:
                row["restarted"] = self._restart_dead(usage, last_out, gen)
                restarts_total += sum(row["restarted"])
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}", used="/".join(map(str, row["codes_used"])))
        bar.close()
        self.model.eval()
        self.fit_info.update(history=history, dead_code_restarts=restarts_total, device=str(device))

    def parameters_for_training(self):
        return list(self.model.parameters())

    def forward_losses(self, batch: torch.Tensor) -> dict:
        z = self.model.encoder(batch)
        out = self.model.quantize(z, beta=self.config.beta, estimator=self.config.estimator)
        out["z"] = z
        out["recon"] = F.mse_loss(self.model.decoder(out["x_q"]), batch)
        return out

    @torch.no_grad()
    def _restart_dead(self, usage: list[torch.Tensor], out: dict, gen: torch.Generator) -> list[int]:
        """Move codes unused this epoch onto random residuals of the last batch (plus tiny noise)."""
        counts = []
        for l, cb in enumerate(self.model.codebooks):
            dead = torch.nonzero(usage[l] == 0).flatten()
            counts.append(int(len(dead)))
            if len(dead) == 0:
                continue
            pool = out["residuals"][l]
            pick = torch.randint(len(pool), (len(dead),), generator=gen).to(pool.device)
            noise = torch.randn(len(dead), pool.shape[1], generator=gen).to(pool.device)
            scale = pool.std().clamp_min(1e-6) * 0.01
            cb.data[dead] = pool[pick] + noise * scale
        return counts

    # ------------------------------------------------------------------------------------- encoding
    @torch.no_grad()
    def _encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        dev = next(self.model.parameters()).device
        codes, last = [], []
        for lo in range(0, emb.shape[0], 8192):
            xb = torch.from_numpy(np.array(emb[lo:lo + 8192], dtype=np.float32, copy=True)).to(dev)
            z = self.model.encoder(self.model.standardize(xb))
            out = self.model.quantize(z)
            codes.append(out["codes"].cpu())
            last.append(sq_dist(out["last_residual"], self.model.codebooks[-1]).cpu())
        return torch.cat(codes).numpy().astype(np.int64), torch.cat(last).numpy().astype(np.float32)

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, L) raw codes -> (N, d) decoder output."""
        dev = next(self.model.parameters()).device
        c = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=dev)
        z = sum(cb[c[:, l]] for l, cb in enumerate(self.model.codebooks))
        return self.model.unstandardize(self.model.decoder(z)).cpu().numpy().astype(np.float32)

    def reconstruct(self, emb: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(emb))

    # ------------------------------------------------------------------------------------------- io
    def _write_extra(self, directory) -> None:
        """loss_curve.png: per-epoch losses and codes used per level (also in config.json fit_info)."""
        history = self.fit_info.get("history") or []
        if len(history) < 2:
            return
        plot_history(history, directory / "loss_curve.png", title=f"{self.name} training")

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        first = state.get("encoder.0.weight")
        if first is None:
            raise SemrecError(f"{self.name}: weights lack encoder.0.weight (not an RQ-VAE checkpoint)")
        self.model = RQVAEModel(int(first.shape[1]), self.config)
        try:
            self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()
                                        if k.split(".")[0] in ("encoder", "decoder", "codebooks", "in_mean", "in_scale")})
        except RuntimeError as e:
            raise SemrecError(f"{self.name}: weights do not match the config ({e})") from None
        self.model.to(self._device()).eval()
