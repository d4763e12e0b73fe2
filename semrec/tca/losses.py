"""Token-level training losses: NTP, Soft-NTP (TCA's soft label alignment), auxiliary KL, label smoothing,
each optionally in MSL mode (logits masked to the trie-allowed next tokens) and with a softmax temperature tau.

All of them share one memory-lean engine: only the non-ignored positions are processed, in row chunks
of bounded size, in float32 (float64 logits stay float64), with a hand-written backward that recomputes
the softmax per chunk. No (B, L, V) float32 copy of bf16 logits is ever built; the only full-size tensor
is the gradient itself (in the logits' dtype). CF distributions may be dense (B, L, V) tensors or a
:class:`~semrec.tca.tokenizer.SparseTokenDistribution`; they are constants (no gradient flows into them).

Definitions (per position, z = logits / tau, masked to the allowed tokens in MSL mode, p = softmax(z)):
- soft_ntp: -log sum_v y~(v) p(v), y~ = (1 - alpha) onehot(target) + alpha cf; y~ = onehot where the cf
  row is all zero. alpha = 0 is exactly cross-entropy.
- aux_kl: -log p(target) + lam * KL(cf || p) (rows without CF mass add no KL).
- label_smoothing: cross-entropy against (1 - eps) onehot + eps * uniform (over the allowed tokens in MSL
  mode, else over the vocabulary; equals F.cross_entropy(label_smoothing=eps) then).
Reduction "mean" averages over non-ignored positions, "sum" sums them, "none" returns the targets' shape
with zeros at ignored positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from semrec.errors import SemrecError
from semrec.tca.tokenizer import SparseTokenDistribution

# Elements (rows x vocabulary) processed per chunk; a few float32 temporaries of this size are live at once.
LOGIT_ELEMENTS_PER_CHUNK = {"cpu": 1 << 22, "cuda": 1 << 25}
_NEG_INF = float("-inf")


class _CfRows:
    """The CF rows of one chunk: dense (C, V), or sparse entries (local row, flat offset local * V + token
    in a (C, V) tensor, value); a row's tokens are distinct."""

    def __init__(self, dense: torch.Tensor | None = None, local=None, flat=None, val=None, rows: int = 0):
        self.dense, self.local, self.flat, self.val, self.n = dense, local, flat, val, rows

    def _at(self, x: torch.Tensor) -> torch.Tensor:
        """The entries' elements of a (C, V) tensor."""
        return x.reshape(-1).index_select(0, self.flat)

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.n, dtype=x.dtype, device=x.device).index_add_(0, self.local, x)

    def mass(self) -> torch.Tensor:
        return self.dense.sum(1) if self.dense is not None else self._sum(self.val)

    def terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mass, log sum cf * exp(z), sum cf * z, sum cf * log cf) per row."""
        if self.dense is not None:
            v = self.dense
            lcf = torch.logsumexp(z + v.log(), dim=1)
            cz = torch.where(v > 0, v * z, torch.zeros_like(z)).sum(1)
            return v.sum(1), lcf, cz, torch.xlogy(v, v).sum(1)
        v, zk = self.val, self._at(z)
        x = zk + v.log()
        m = torch.full((self.n,), _NEG_INF, dtype=z.dtype, device=z.device)
        m = m.scatter_reduce_(0, self.local, x, reduce="amax", include_self=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        lcf = self._sum(torch.exp(x - m[self.local])).log() + m
        cz = self._sum(torch.where(v > 0, v * zk, torch.zeros_like(zk)))
        return self._sum(v), lcf, cz, self._sum(torch.xlogy(v, v))

    def subtract(self, grad: torch.Tensor, coef: torch.Tensor, z: torch.Tensor, shift: torch.Tensor | None) -> None:
        """grad -= coef[:, None] * cf (* exp(z - shift[:, None]) when shift is given)."""
        if self.dense is not None:
            w = self.dense if shift is None else self.dense * torch.exp(z - shift.unsqueeze(1))
            grad.sub_(coef.unsqueeze(1) * w)
            return
        w = self.val if shift is None else self.val * torch.exp(self._at(z) - shift[self.local])
        grad.view(-1).index_add_(0, self.flat, -(coef[self.local] * w))


def _csr_entries(ptr: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(local row (E,), entry index (E,)) of the CSR entries of rows r (C,)."""
    start = ptr[r]
    cnt = ptr[r + 1] - start
    total = int(cnt.sum())
    local = torch.repeat_interleave(torch.arange(r.numel(), device=r.device), cnt, output_size=total)
    offset = torch.cumsum(cnt, 0) - cnt
    return local, start[local] + torch.arange(total, device=r.device) - offset[local]


@dataclass
class _Plan:
    mode: str
    weight: float  # alpha / lam / eps
    tau: float
    rows: torch.Tensor  # (P,) flat indices of the non-ignored positions, ascending
    full: bool  # every position is trained (rows is arange(P)): a chunk's rows are a slice of the logits
    targets: torch.Tensor  # (P,)
    cf: Any  # None | dense (R, V) view | SparseTokenDistribution
    allowed: Any  # None | dense bool (R, V) view | SparseTokenDistribution | (indices (R, K), counts (R,))
    vocab: int
    chunk: int
    dtype: torch.dtype

    def z(self, flat: torch.Tensor, sl: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled, masked logits (C, V) of chunk `sl` of the rows and the allowed mask (C, V) or None.
        Read-only: it may be a view of `flat`."""
        r = self.rows[sl]
        z = (flat[sl] if self.full else flat[r]).to(self.dtype)
        if self.tau != 1:
            z = z / self.tau
        if self.allowed is None:
            return z, None
        if isinstance(self.allowed, torch.Tensor):
            mask = self.allowed[r]
        elif isinstance(self.allowed, SparseTokenDistribution):
            local, e = _csr_entries(self.allowed.ptr, r)
            mask = torch.zeros(r.numel(), self.vocab, dtype=torch.bool, device=z.device)
            mask[local, self.allowed.tokens[e]] = True
        else:
            idx, cnt = self.allowed[0][r], self.allowed[1][r]
            k = torch.arange(idx.shape[1], device=idx.device)
            idx = torch.where(k < cnt.unsqueeze(1), idx, torch.full_like(idx, self.vocab))
            mask = torch.zeros(r.numel(), self.vocab + 1, dtype=torch.bool, device=idx.device)
            mask = mask.scatter_(1, idx, True)[:, : self.vocab]
        mask = mask | ~mask.any(dim=1, keepdim=True)  # a row with nothing allowed stays unmasked
        return z.masked_fill(~mask, _NEG_INF), mask

    def cf_rows(self, r: torch.Tensor) -> _CfRows | None:
        if self.cf is None:
            return None
        if isinstance(self.cf, torch.Tensor):
            return _CfRows(dense=self.cf[r].to(self.dtype))
        local, e = _csr_entries(self.cf.ptr, r)
        return _CfRows(local=local, flat=local * self.vocab + self.cf.tokens[e],
                       val=self.cf.values[e].to(self.dtype), rows=r.numel())


class _TokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, plan: _Plan) -> torch.Tensor:  # type: ignore[override]
        flat = logits.detach().reshape(-1, plan.vocab)
        p_rows = plan.rows.numel()
        loss = torch.empty(p_rows, dtype=plan.dtype, device=logits.device)
        lse_all = torch.empty_like(loss)
        aux_all = torch.empty_like(loss)  # soft_ntp: log S; label_smoothing: allowed count
        blocked = torch.zeros((), dtype=torch.bool, device=logits.device)
        a, w = plan.mode, plan.weight
        for c0 in range(0, p_rows, plan.chunk):
            sl = slice(c0, min(c0 + plan.chunk, p_rows))
            r, t = plan.rows[sl], plan.targets[sl]
            z, mask = plan.z(flat, sl)
            lse = torch.logsumexp(z, dim=1)
            zt = z.gather(1, t.unsqueeze(1)).squeeze(1)
            if mask is not None:
                blocked |= (zt == _NEG_INF).any()
            cf = plan.cf_rows(r)
            if a == "soft_ntp":
                log_s = zt
                if cf is not None and w > 0:
                    mass, lcf, _, _ = cf.terms(z)
                    la = math.log1p(-w) if w < 1 else _NEG_INF
                    mixed = torch.logaddexp(zt + la, lcf + math.log(w))
                    log_s = torch.where(mass > 0, mixed, zt)
                loss[sl] = lse - log_s
                aux_all[sl] = log_s
            elif a == "aux_kl":
                out = lse - zt
                if cf is not None and w != 0:
                    mass, _, cz, clogc = cf.terms(z)
                    kl = clogc - cz + mass * lse
                    out = out + w * torch.where(mass > 0, kl, torch.zeros_like(kl))
                loss[sl] = out
            else:  # label_smoothing
                if mask is None:
                    cnt = torch.full_like(lse, plan.vocab)
                    zsum = z.sum(1)
                else:
                    cnt = mask.sum(1).to(plan.dtype)
                    zsum = torch.where(mask, z, torch.zeros_like(z)).sum(1)
                loss[sl] = lse - (1 - w) * zt - w * zsum / cnt
                aux_all[sl] = cnt
            lse_all[sl] = lse
        if bool(blocked):
            raise SemrecError("MSL: a target token is not among the allowed tokens of its position "
                              "(the allowed mask must come from the same trie as the targets)")
        ctx.plan = plan
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        ctx.save_for_backward(logits, lse_all, aux_all)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, lse_all, aux_all = ctx.saved_tensors
        plan: _Plan = ctx.plan
        flat = logits.detach().reshape(-1, plan.vocab)
        # zeros at the ignored positions; with none, every row is written below
        grad_flat = (torch.empty if plan.full else torch.zeros)(flat.shape, dtype=ctx.dtype, device=flat.device)
        a, w = plan.mode, plan.weight
        for c0 in range(0, plan.rows.numel(), plan.chunk):
            sl = slice(c0, min(c0 + plan.chunk, plan.rows.numel()))
            r, t = plan.rows[sl], plan.targets[sl]
            z, mask = plan.z(flat, sl)
            lse = lse_all[sl]
            grad = torch.exp(z - lse.unsqueeze(1))  # softmax p
            cf = plan.cf_rows(r)
            if a == "soft_ntp":  # d/dz = p - y~ p / S
                log_s = aux_all[sl]
                q_t = torch.ones_like(lse)
                if cf is not None and w > 0:
                    zt = z.gather(1, t.unsqueeze(1)).squeeze(1)
                    has = cf.mass() > 0
                    q_t = torch.where(has, (1 - w) * torch.exp(zt - log_s), q_t)
                    cf.subtract(grad, torch.where(has, torch.full_like(lse, w), torch.zeros_like(lse)), z, log_s)
                grad.scatter_add_(1, t.unsqueeze(1), -q_t.unsqueeze(1))
            elif a == "aux_kl":  # d/dz = p - onehot + lam (mass p - cf)
                grad.scatter_add_(1, t.unsqueeze(1), -torch.ones_like(lse).unsqueeze(1))
                if cf is not None and w != 0:
                    mass = cf.mass()
                    coef = torch.where(mass > 0, torch.full_like(mass, w), torch.zeros_like(mass))
                    grad.add_((coef * mass).unsqueeze(1) * torch.exp(z - lse.unsqueeze(1)))
                    cf.subtract(grad, coef, z, None)
            else:  # d/dz = p - smoothed target
                cnt = aux_all[sl]
                uni = (w / cnt).unsqueeze(1)
                grad.sub_(uni if mask is None else uni * mask)
                grad.scatter_add_(1, t.unsqueeze(1), torch.full_like(lse, -(1 - w)).unsqueeze(1))
            grad.mul_((grad_out[sl].to(plan.dtype) / plan.tau).unsqueeze(1))
            grad_flat[sl if plan.full else r] = grad.to(ctx.dtype)
        return grad_flat.view(ctx.shape), None


def _flat_cf(cf, logits: torch.Tensor):
    v = logits.shape[-1]
    if cf is None:
        return None
    if isinstance(cf, SparseTokenDistribution):
        if tuple(cf.shape[:2]) != tuple(logits.shape[:-1]) or cf.vocab_size != v:
            raise SemrecError(f"cf_probs: sparse shape {tuple(cf.shape)} does not match logits {tuple(logits.shape)}")
        return cf.to(logits.device)
    if isinstance(cf, torch.Tensor):
        if cf.shape != logits.shape:
            raise SemrecError(f"cf_probs: shape {tuple(cf.shape)} does not match logits {tuple(logits.shape)}")
        return cf.detach().reshape(-1, v)
    raise SemrecError(f"cf_probs: expected a tensor, a SparseTokenDistribution or None, got {type(cf).__name__}")


def _flat_allowed(allowed, logits: torch.Tensor):
    v = logits.shape[-1]
    if allowed is None:
        return None
    if isinstance(allowed, SparseTokenDistribution):
        if tuple(allowed.shape[:2]) != tuple(logits.shape[:-1]) or allowed.vocab_size != v:
            raise SemrecError(f"allowed: sparse shape {tuple(allowed.shape)} does not match logits "
                              f"{tuple(logits.shape)}")
        return allowed.to(logits.device)
    if isinstance(allowed, tuple) and len(allowed) == 2:
        idx, cnt = allowed
        if tuple(idx.shape[:-1]) != tuple(logits.shape[:-1]) or tuple(cnt.shape) != tuple(logits.shape[:-1]):
            raise SemrecError(f"allowed: index shape {tuple(idx.shape)} / counts {tuple(cnt.shape)} do not match "
                              f"logits {tuple(logits.shape)}")
        return idx.reshape(-1, idx.shape[-1]).to(logits.device), cnt.reshape(-1).to(logits.device)
    if isinstance(allowed, torch.Tensor) and allowed.dtype == torch.bool:
        if allowed.shape != logits.shape:
            raise SemrecError(f"allowed: mask shape {tuple(allowed.shape)} does not match logits {tuple(logits.shape)}")
        return allowed.reshape(-1, v)
    raise SemrecError("allowed: expected a bool mask like logits, a SparseTokenDistribution or (indices, counts)")


def _token_loss(mode: str, logits: torch.Tensor, targets: torch.Tensor, cf, weight: float, tau: float,
                ignore_index: int, reduction: str, allowed) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() < 2 or not logits.is_floating_point():
        raise SemrecError("logits: expected a float tensor (..., V)")
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(logits.shape[:-1]):
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise SemrecError(f"targets: shape {got} does not match logits {tuple(logits.shape)} without the vocab dim")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise SemrecError(f"targets: expected integer token ids, got {targets.dtype}")
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise SemrecError(f"tau must be > 0, got {tau!r}")
    if reduction not in ("mean", "sum", "none"):
        raise SemrecError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    v = logits.shape[-1]
    flat_t = targets.reshape(-1).to(logits.device).long()
    rows = (flat_t != ignore_index).nonzero().squeeze(1)
    tgt = flat_t[rows]
    if tgt.numel() and bool(((tgt < 0) | (tgt >= v)).any()):
        bad = int(tgt[(tgt < 0) | (tgt >= v)][0])
        raise SemrecError(f"targets: token {bad} outside [0, {v}) and not ignore_index {ignore_index}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    chunk = max(1, LOGIT_ELEMENTS_PER_CHUNK.get(logits.device.type, LOGIT_ELEMENTS_PER_CHUNK["cuda"]) // v)
    plan = _Plan(mode, float(weight), float(tau), rows, rows.numel() == flat_t.numel(), tgt, _flat_cf(cf, logits),
                 _flat_allowed(allowed, logits), v, chunk, dtype)
    per_row = _TokenLoss.apply(logits, plan)
    if reduction == "none":
        out = torch.zeros(flat_t.numel(), dtype=dtype, device=logits.device).scatter(0, rows, per_row)
        return out.view(targets.shape)
    if reduction == "sum":
        return per_row.sum()
    if rows.numel() == 0:
        return per_row.sum()  # 0, still attached to the graph
    return per_row.sum() / rows.numel()


def soft_ntp_loss(logits: torch.Tensor, targets: torch.Tensor, cf_probs, alpha: float, *, tau: float = 1.0,
                  ignore_index: int = -100, reduction: str = "mean", allowed=None) -> torch.Tensor:
    """Soft-NTP: -log sum_v y~(v) softmax(logits / tau)(v), y~ = (1 - alpha) onehot + alpha cf_probs.

    logits (B, L, V) (any float dtype); targets (B, L) with ignore_index at untrained positions;
    cf_probs dense (B, L, V), a SparseTokenDistribution, or None (plain NTP). `allowed` (MSL mode):
    bool (B, L, V), a SparseTokenDistribution (its allowed tokens) or (indices (B, L, K), counts (B, L)).
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise SemrecError(f"alpha must be in [0, 1], got {alpha!r}")
    return _token_loss("soft_ntp", logits, targets, cf_probs, alpha, tau, ignore_index, reduction, allowed)


def ntp_loss(logits: torch.Tensor, targets: torch.Tensor, *, tau: float = 1.0, ignore_index: int = -100,
             reduction: str = "mean", allowed=None) -> torch.Tensor:
    """Plain next-token cross-entropy (soft_ntp_loss at alpha = 0), with the same memory-lean engine."""
    return _token_loss("soft_ntp", logits, targets, None, 0.0, tau, ignore_index, reduction, allowed)


def aux_kl_loss(logits: torch.Tensor, targets: torch.Tensor, cf_probs, lam: float, *, tau: float = 1.0,
                ignore_index: int = -100, reduction: str = "mean", allowed=None) -> torch.Tensor:
    """Cross-entropy + lam * KL(cf_probs || softmax(logits / tau)) per position (the 'w/o CT/SA' ablation)."""
    if not (isinstance(lam, (int, float)) and lam >= 0):
        raise SemrecError(f"lam must be >= 0, got {lam!r}")
    return _token_loss("aux_kl", logits, targets, cf_probs, lam, tau, ignore_index, reduction, allowed)


def label_smoothing_loss(logits: torch.Tensor, targets: torch.Tensor, epsilon: float, *, tau: float = 1.0,
                         ignore_index: int = -100, reduction: str = "mean", allowed=None) -> torch.Tensor:
    """Cross-entropy against (1 - epsilon) onehot + epsilon uniform (over allowed tokens in MSL mode)."""
    if not (isinstance(epsilon, (int, float)) and 0.0 <= epsilon <= 1.0):
        raise SemrecError(f"epsilon must be in [0, 1], got {epsilon!r}")
    return _token_loss("label_smoothing", logits, targets, None, epsilon, tau, ignore_index, reduction, allowed)


def msl_mask_logits(logits: torch.Tensor, allowed) -> torch.Tensor:
    """Logits with every token outside the trie-allowed set at -inf (rows with nothing allowed unchanged).

    `allowed`: bool (..., V) like logits, a SparseTokenDistribution or (indices, counts). This builds a
    dense mask; the losses' `allowed=` argument gives the same result chunk by chunk for large vocabularies.
    """
    if isinstance(allowed, SparseTokenDistribution):
        mask = allowed.allowed_mask()
    elif isinstance(allowed, tuple) and len(allowed) == 2:
        idx, cnt = allowed
        k = torch.arange(idx.shape[-1], device=idx.device)
        idx = torch.where(k < cnt.unsqueeze(-1), idx, torch.full_like(idx, logits.shape[-1]))
        mask = torch.zeros(*idx.shape[:-1], logits.shape[-1] + 1, dtype=torch.bool, device=idx.device)
        mask = mask.scatter_(-1, idx, True)[..., : logits.shape[-1]]
    elif isinstance(allowed, torch.Tensor) and allowed.dtype == torch.bool:
        mask = allowed
    else:
        raise SemrecError("allowed: expected a bool mask like logits, a SparseTokenDistribution or (indices, counts)")
    if mask.shape != logits.shape:
        raise SemrecError(f"allowed: shape {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
    mask = mask.to(logits.device)
    return logits.masked_fill(~(mask | ~mask.any(dim=-1, keepdim=True)), _NEG_INF)


def _uniform(fn, uses_cf: bool):
    def call(logits, targets, cf_probs=None, weight: float = 0.0, **kw):
        return fn(logits, targets, cf_probs, weight, **kw) if uses_cf else fn(logits, targets, weight, **kw)
    call.__doc__ = fn.__doc__
    return call


def _ntp_uniform(logits, targets, cf_probs=None, weight: float = 0.0, **kw):
    """Plain NTP (cf_probs and weight ignored)."""
    return ntp_loss(logits, targets, **kw)


# Registry by name, uniform signature: fn(logits, targets, cf_probs=None, weight=0.0, *, tau, ignore_index,
# reduction, allowed). `weight` is alpha (soft_ntp), lam (aux_kl) or epsilon (label_smoothing).
TOKEN_LOSSES = {
    "ntp": _ntp_uniform,
    "soft_ntp": _uniform(soft_ntp_loss, True),
    "aux_kl": _uniform(aux_kl_loss, True),
    "label_smoothing": _uniform(label_smoothing_loss, False),
}
