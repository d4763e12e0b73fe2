"""Peer benchmark: cornac's TIGER against semrec's TIGER on toys-p (protocol P), counted by one function.

Both sides get the same leave-one-out split, the same MiniLM item vectors (tokenizers/rqkmeans.yaml),
literally the same semantic IDs (semrec's RQ-KMeans 3x256 codes with Sinkhorn collision handling are
handed to cornac through its tokenizer hook, so cornac quantizes nothing itself), the same model size,
batch size and number of epochs, 10 beams and one torch thread. cornac trains with its shipped recipe
(`GRID_CONFIG` or `PAISCHER_CONFIG`); semrec trains in three settings:

- `matched`: the cornac recipe copied option by option (optimizer, learning-rate schedule, weight decay,
  no gradient clipping, dropout, best-on-valid selection on the same number of valid rows), with the
  model options that mirror cornac's network: an output head of its own (cornac: one head per code
  level) and a separator token after each history item (cornac's constant 4th "dedup" code, which every
  item gets because the given codes are unique, plays that role in its encoder input);
- `semrec`: the same model size with semrec's defaults (tied embeddings, no separator) and the training
  setup of semrec's protocol-P CPU recipes (AdamW 3e-3, 100 warmup steps or a tenth of a shorter run,
  cosine to 0, weight decay 0.01, gradient clipping at 1);
- `semrec_msl`: `semrec` with MSL, the loss restricted to the trie-allowed next tokens (cornac restricts
  each level's cross-entropy to that level's codes).

Every side's test metrics are computed from its top-10 lists by `semrec.evaluation.score_lists`: the same
test users, the target's rank in the beam's list (history items are not removed, a target outside the 10
beams is a miss). cornac's own `ranking_eval` is also run on cornac's scores (no second decoding: a
recommender that replays them) and must give the same numbers; the results say whether it did.

    python benchmarks/peer_tiger.py --tiny                      # 300 users, 1 epoch: a smoke run
    python benchmarks/peer_tiger.py --size small --epochs 2     # every user and item, 2 epochs each
    python benchmarks/peer_tiger.py --size small --users 3000 --epochs 1   # a CPU budget (the committed run)
    python benchmarks/peer_tiger.py --skip-cornac               # semrec rows only (cornac not installed)

With --users the run keeps that many users (a seeded uniform sample) and the items of their sequences;
both sides see that catalogue. Results are written after each finished row ("complete": false until the
last), so a run stopped at a deadline keeps what it finished.

cornac is an optional benchmark dependency: `pip install -e .[peers]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
KS = (5, 10)
NUM_BEAMS = 10

# cornac 3.0.1's TIGER constructor defaults for the seq2seq stage and the two shipped recipes, resolved
# (recipe over defaults). Kept here so the semrec rows can run without cornac; checked against the
# installed cornac whenever it is importable.
CORNAC_DEFAULTS = dict(d_model=128, d_ff=1024, num_heads=6, d_kv=64, num_enc_layers=4, num_dec_layers=4,
                       dropout=0.1, max_len=20, n_epochs=20, learning_rate=0.001, weight_decay=0.0001,
                       batch_size=256, lr_schedule="constant", warmup_steps=10000, model_selection="last",
                       val_metric="ndcg", val_eval_every=5, val_k=10, val_sample=2000, n_beams=20)
CORNAC_RECIPES = {
    "grid": dict(CORNAC_DEFAULTS, learning_rate=5e-4, weight_decay=1e-6, batch_size=256, lr_schedule="constant",
                 model_selection="best", val_metric="ndcg", val_k=10, n_epochs=50, val_eval_every=1,
                 val_sample=2000),
    "paischer": dict(CORNAC_DEFAULTS, num_enc_layers=6, num_dec_layers=6, dropout=0.2, learning_rate=3e-4,
                     lr_schedule="cosine", warmup_steps=10000, weight_decay=0.035, batch_size=64, n_beams=30,
                     model_selection="best", val_metric="ndcg", val_k=10, n_epochs=100, val_eval_every=5,
                     val_sample=2000),
}
CORNAC_RECIPE_NAMES = {"grid": "GRID_CONFIG", "paischer": "PAISCHER_CONFIG"}
# semrec's small CPU TIGER (the protocol-P CPU recipes): used for both sides with --size small
SMALL = dict(num_enc_layers=2, num_dec_layers=2, d_model=128, num_heads=4, d_kv=32, d_ff=512)
# semrec's own training setup (recipes/toys/tiger_tca_p_cpu.yaml)
SEMREC_TRAIN = dict(optimizer="adamw", lr=3e-3, warmup_steps=100, min_lr_ratio=0.0, weight_decay=0.01,
                    max_grad_norm=1.0)
SETTINGS = ("matched", "semrec", "semrec_msl")


@dataclass
class Split:
    """What one run uses, items numbered 0..n-1 over its catalogue `items` (the dataset's item ids)."""

    items: np.ndarray  # (n,) dataset item id of each item of the run's catalogue
    tok: object  # the run's ItemTokenization (rows of the dataset's codes)
    features: np.ndarray  # (n, d) item vectors
    train_seqs: list  # per user: the training sequence (history + target of the train row)
    train_examples: object  # every prefix of the training sequences (semrec.models.training_examples)
    valid: object
    test: object  # every user's test row (cornac's test sessions)
    eval_test: object  # the test rows scored (all, or a seeded sample of users)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Clock:
    """CPU (time.process_time) and wall seconds of a block."""

    def __enter__(self) -> "Clock":
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


# ----------------------------------------------------------------------------------------------- data
def _renumber(ex, new_id: np.ndarray):
    from semrec.data.dataset import Examples

    return Examples(ex.users, new_id[ex.targets], new_id[ex.hist_items], ex.hist_offsets, ex.timestamps)


def load_split(ds, tok, features: np.ndarray, max_history: int, *, users: int | None = None,
               test_users: int | None = None, seed: int = 0) -> Split:
    """The rows of all users of `ds`, or of `users` of them drawn uniformly (seeded) with the catalogue cut to
    the items of their sequences (renumbered; their codes are the full catalogue's rows, so both sides see
    the same catalogue). Checks that the splits are one leave-one-out sequence per user: test history = valid
    history + valid target = train sequence + valid target. `test_users`: score only that many test rows,
    drawn uniformly (seeded), in user order."""
    from semrec.errors import SemrecError
    from semrec.itemtok.artifact import ItemTokenization
    from semrec.data.examples import training_examples

    tr, va, te = ds.train, ds.valid, ds.test
    if not (np.array_equal(tr.users, va.users) and np.array_equal(va.users, te.users)):
        raise SemrecError(f"{ds.name}: the train, valid and test splits do not hold one row per user in one order")
    rng = np.random.default_rng(seed)
    keep = np.arange(len(te))
    if users is not None and users < len(te):
        keep = np.sort(rng.choice(len(te), size=users, replace=False))
    for e in keep:
        seq = np.append(tr.history(e), tr.targets[e])
        if not (np.array_equal(va.history(e), seq) and np.array_equal(te.history(e), np.append(seq, va.targets[e]))):
            raise SemrecError(f"{ds.name}: user {tr.users[e]} is not a leave-one-out sequence across the splits")
    ex = training_examples(ds, max_history)
    valid, test = va.subset(keep), te.subset(keep)
    if len(keep) < len(te):
        ex = ex.subset(np.isin(ex.users, te.users[keep]))
    items = np.unique(np.concatenate([test.hist_items, test.targets]))
    if len(items) < ds.num_items:  # renumber the run's catalogue 0..n-1
        new_id = np.full(ds.num_items, -1, dtype=np.int64)
        new_id[items] = np.arange(len(items))
        ex, valid, test = _renumber(ex, new_id), _renumber(valid, new_id), _renumber(test, new_id)
        tok = ItemTokenization.from_raw_codes(tok.raw_codes[items], tok.codebook_sizes, scheme=tok.scheme,
                                              config=dict(tok.config, catalogue_items=len(items)),
                                              collisions_before=tok.collisions_before, stats=tok.stats)
        features = features[items]
    seqs = [valid.history(e).copy() for e in range(len(valid))]
    rows = np.arange(len(test))
    if test_users is not None and test_users < len(test):
        rows = np.sort(rng.choice(len(test), size=test_users, replace=False))
    return Split(items, tok, features, seqs, ex, valid, test, test.subset(rows))


def tokenization(ds, scheme: Path, progress: bool):
    """(ItemTokenization, (N, d) item vectors, embedding info) from the scheme file, vectors cached."""
    from semrec.embeddings import compute_item_embeddings, default_cache_dir
    from semrec.itemtok.schemes import build_tokenization, load_scheme

    cfg = load_scheme(scheme)
    emb = compute_item_embeddings(ds, cfg.embedding, cache_dir=default_cache_dir(), device="cpu", progress=progress)
    tok = build_tokenization(ds, cfg, embeddings=emb, device="cpu", progress=progress)
    return tok, np.asarray(emb.vectors, dtype=np.float32), emb.info


# --------------------------------------------------------------------------------------------- cornac
def check_cornac_recipes() -> str:
    """The installed cornac's version; raises if its TIGER defaults or recipes differ from the copies here."""
    import cornac
    from cornac.models import TIGER
    from cornac.models import tiger as ctiger

    from semrec.errors import SemrecError

    for name, resolved in CORNAC_RECIPES.items():
        shipped = getattr(ctiger, CORNAC_RECIPE_NAMES[name])
        model = TIGER(**shipped)
        got = {k: getattr(model, k) for k in resolved}
        if got != resolved:
            diff = {k: (resolved[k], got[k]) for k in resolved if got[k] != resolved[k]}
            raise SemrecError(f"cornac {cornac.__version__}: {CORNAC_RECIPE_NAMES[name]} differs from this "
                              f"script's copy (copy, installed): {diff}")
    return cornac.__version__


def cornac_eval_method(split: Split, features: np.ndarray, seed: int):
    """cornac's NextItemEvaluation over the same sequences, laid out as its `leave_last_out` does (session id =
    user id; train seq[:-2], valid seq[:-1], test seq), every item of the sequences known
    (exclude_unknowns=False: cornac's default True would drop the items never seen in training from the
    catalogue and from the test sessions). cornac numbers items by first appearance: see `item_order`."""
    from cornac.data import FeatureModality
    from cornac.eval_methods import NextItemEvaluation

    train, val, test = [], [], []
    for e, seq in enumerate(split.train_seqs):
        u = str(int(split.test.users[e]))
        full = np.append(np.append(seq, split.valid.targets[e]), split.test.targets[e])
        rows = [(u, u, str(int(i)), t) for t, i in enumerate(full)]
        train += rows[:-2]
        val += rows[:-1]
        test += rows
    ids = [str(i) for i in range(features.shape[0])]
    return NextItemEvaluation.from_splits(
        train_data=train, test_data=test, val_data=val, fmt="USIT", exclude_unknowns=False, seed=seed, mode="last",
        item_feature=FeatureModality(features=features, ids=ids))


def item_order(eval_method) -> np.ndarray:
    """(cornac's item count,) the semrec item id of each cornac item index."""
    order = np.empty(len(eval_method.global_iid_map), dtype=np.int64)
    for raw, idx in eval_method.global_iid_map.items():
        order[idx] = int(raw)
    return order


def cornac_model(recipe: dict, raw_codes: np.ndarray, codebook_size: int, seed: int):
    """cornac's TIGER with the given semantic IDs: `_tokenize` (cornac's hook from item features to the
    (N, levels) code table, before its collision level and trie are built) returns them instead of fitting
    RQ-VAE / residual k-means."""
    from cornac.models import TIGER

    class GivenCodesTIGER(TIGER):
        def _tokenize(self, torch, feats_t):
            if feats_t.shape[0] != raw_codes.shape[0]:
                raise RuntimeError(f"cornac knows {feats_t.shape[0]} items, the codes cover {raw_codes.shape[0]}")
            return raw_codes.astype("int64")

    return GivenCodesTIGER(**recipe, rqvae_num_levels=raw_codes.shape[1], rqvae_codebook_size=codebook_size,
                           scoring="beam", seed=seed, device="cpu", verbose=False)


def cornac_top_lists(model, eval_method, test, progress: bool) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(E, 10) cornac's beam items per test row as semrec item ids (best first; -1 where fewer than 10
    beams), (E, 10) their scores (NaN for -1) and each row's score vector over cornac's item indices (to
    replay cornac's own evaluation)."""
    from tqdm.auto import tqdm

    items = item_order(eval_method)
    index = {int(i): c for c, i in enumerate(items)}
    uid = eval_method.global_uid_map
    top = np.full((len(test), NUM_BEAMS), -1, dtype=np.int64)
    top_scores = np.full((len(test), NUM_BEAMS), np.nan)
    scores = []
    for e in tqdm(range(len(test)), desc="cornac decode", disable=not progress, mininterval=30):
        s = model.score(uid[str(int(test.users[e]))], history_items=[index[int(i)] for i in test.history(e)])
        if len(s) != len(items):
            raise RuntimeError(f"cornac scored {len(s)} items, expected {len(items)}")
        order = np.argsort(-s, kind="stable")[:NUM_BEAMS]
        order = order[s[order] > -1e9]  # non-beam items hold cornac's -1e10 filler
        top[e, :len(order)] = items[order]
        top_scores[e, :len(order)] = s[order]
        scores.append(s.astype(np.float32))
    return top, top_scores, scores


def cornac_native_metrics(eval_method, test, scores: list[np.ndarray]) -> dict[str, float]:
    """cornac's own `ranking_eval` (mode 'last', exclude_unknowns False, as the eval method was built) on
    the recorded scores: a NextItemRecommender that replays them, checking it is asked about the same
    history the scores were computed for."""
    from cornac.data import SequentialDataset
    from cornac.eval_methods.next_item_evaluation import ranking_eval
    from cornac.metrics import NDCG, Recall
    from cornac.models import NextItemRecommender

    by_user = {int(u): (e, [int(i) for i in test.history(e)]) for e, u in enumerate(test.users)}
    items = item_order(eval_method)

    class Replay(NextItemRecommender):
        def score(self, user_idx, history_items=None, **kwargs):
            raw_user = int(inv_uid[user_idx])
            e, hist = by_user[raw_user]
            if [int(items[i]) for i in history_items] != hist:
                raise RuntimeError(f"cornac's evaluation asks about another history for user {raw_user}")
            return scores[e].astype(np.float64)

    inv_uid = {v: k for k, v in eval_method.global_uid_map.items()}
    replay = Replay("replay", trainable=False)
    replay.fit(eval_method.train_set)
    metrics = [Recall(k=5), NDCG(k=5), Recall(k=10), NDCG(k=10)]
    rows = [(str(int(u)), str(int(u)), str(int(i)), t) for e, u in enumerate(test.users)
            for t, i in enumerate(np.append(test.history(e), test.targets[e]))]
    n_items = len(eval_method.global_iid_map)
    test_set = SequentialDataset.build(rows, fmt="USIT", global_uid_map=eval_method.global_uid_map,
                                       global_iid_map=eval_method.global_iid_map,
                                       global_sid_map=eval_method.global_sid_map, exclude_unknowns=False)
    if len(eval_method.global_iid_map) != n_items:
        raise RuntimeError("the scored test rows hold items cornac's evaluation did not know")
    avg, _ = ranking_eval(replay, metrics, eval_method.train_set, test_set, exclude_unknowns=False, mode="last")
    return {f"{m.name.split('@')[0].lower()}@{m.k}": float(v) for m, v in zip(metrics, avg)}


# --------------------------------------------------------------------------------------------- semrec
def semrec_configs(setting: str, recipe: dict, seed: int, epochs: int, total_steps: int) -> tuple[dict, object]:
    """(TigerConfig dict, TrainConfig) of a semrec setting for the cornac recipe `recipe` (sizes resolved).
    The `semrec` setting warms up over its recipe's 100 steps, or a tenth of `total_steps` if that is less."""
    from semrec.training import TrainConfig

    model = dict(num_layers=recipe["num_enc_layers"], num_decoder_layers=recipe["num_dec_layers"],
                 d_model=recipe["d_model"], num_heads=recipe["num_heads"], d_kv=recipe["d_kv"], d_ff=recipe["d_ff"],
                 dropout=recipe["dropout"], max_history=recipe["max_len"])
    selection = dict(valid_every=recipe["val_eval_every"] if recipe["model_selection"] == "best" else epochs,
                     valid_max_rows=recipe["val_sample"], monitor=f"ndcg@{recipe['val_k']}", patience=0)
    common = dict(epochs=epochs, batch_size=recipe["batch_size"], seed=seed, device="cpu", num_beams=NUM_BEAMS,
                  progress=False, **selection)
    if setting == "matched":
        model.update(tie_embeddings=False, item_separator=True)
        if recipe["lr_schedule"] == "constant":
            sched = dict(warmup_steps=0, min_lr_ratio=1.0)
        else:
            sched = dict(warmup_steps=recipe["warmup_steps"], min_lr_ratio=0.0)
        train = TrainConfig(optimizer="adamw", lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"],
                            max_grad_norm=0.0, **sched, **common)
    elif setting in ("semrec", "semrec_msl"):
        warmup = min(SEMREC_TRAIN["warmup_steps"], total_steps // 10)
        train = TrainConfig(**dict(SEMREC_TRAIN, warmup_steps=warmup), msl=setting == "semrec_msl", **common)
    else:
        raise ValueError(f"unknown semrec setting {setting!r}; known: {', '.join(SETTINGS)}")
    return model, train


def run_semrec(setting: str, tok, split: Split, recipe: dict, seed: int, epochs: int, progress: bool) -> dict:
    from semrec.evaluation import generate
    from semrec.data.examples import ExampleTable
    from semrec.models import build_model
    from semrec.training import Trainer

    steps = epochs * -(-len(split.train_examples) // recipe["batch_size"])
    model_cfg, train_cfg = semrec_configs(setting, recipe, seed, epochs, steps)
    model = build_model("tiger", tok, model_cfg, seed=seed)
    train_cfg.progress = progress
    log(f"semrec {setting}: training {len(split.train_examples)} examples, {epochs} epoch(s)")
    with Clock() as fit:
        valid = split.valid if recipe["model_selection"] == "best" else None
        res = Trainer(model, train_cfg, split.train_examples, valid=valid, protocol="P").fit()
    log(f"semrec {setting}: trained in {fit.wall:.0f} s wall; decoding {len(split.eval_test)} test rows")
    with Clock() as dec:
        gen = generate(model, ExampleTable.from_examples(split.eval_test, model.max_history), num_beams=NUM_BEAMS,
                       batch_size=train_cfg.eval_batch_size)
    items, scores = gen["items"].numpy(), gen["scores"].numpy()
    return {"items": items, "scores": scores, "train_cpu_s": fit.cpu, "train_wall_s": fit.wall,
            "eval_cpu_s": dec.cpu, "eval_wall_s": dec.wall, "steps": res.steps, "epochs_run": res.epochs_run,
            "best_epoch": None if res.best_epoch is None else res.best_epoch + 1,
            "params": sum(p.numel() for p in model.parameters()), "model_config": model_cfg,
            "train_config": {k: getattr(train_cfg, k) for k in ("optimizer", "lr", "warmup_steps", "min_lr_ratio",
                                                                 "weight_decay", "max_grad_norm", "batch_size",
                                                                 "epochs", "valid_every", "valid_max_rows")},
            "invalid": gen["invalid"]}


# -------------------------------------------------------------------------------------------- scoring
def count(items: np.ndarray, scores: np.ndarray | None, test, num_items: int) -> dict:
    """The one counting both sides share: semrec's score_lists on (E, 10) lists against the test targets."""
    import torch

    from semrec.evaluation import score_lists

    out, ranks = score_lists(torch.as_tensor(items), test.targets, KS, num_items=num_items)
    row = {k: out[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "coverage@10", "distinct_top1")}
    row["n_rows"] = int(len(ranks))
    row["hits@10"] = int(((ranks > 0) & (ranks <= 10)).sum())
    row["recall@10_se"] = float(np.sqrt(row["recall@10"] * (1 - row["recall@10"]) / max(len(ranks), 1)))
    row["rows_with_fewer_than_10_items"] = int((items < 0).any(1).sum())
    hist_hits = sum(int(np.isin(items[e][items[e] >= 0], test.history(e)).any()) for e in range(len(items)))
    row["rows_recommending_a_history_item"] = hist_hits
    if scores is not None:  # exact score ties among a row's listed items (their order is then arbitrary)
        s = np.where(items >= 0, scores, np.nan)
        row["rows_with_tied_scores"] = int(sum(len(set(r[~np.isnan(r)].tolist())) < int((~np.isnan(r)).sum())
                                               for r in s))
    return row


def mostpop_row(split: Split, num_items: int) -> dict:
    """MostPop on the scored test rows: the items most often a training target of this split, for every row."""
    from semrec.evaluation import most_popular_lists
    from semrec.metrics import item_popularity

    pop = item_popularity(split.train_examples.targets, num_items)
    lists = most_popular_lists(pop, len(split.eval_test), 10).numpy()
    return {"model": "MostPop", "setting": "reference", **count(lists, None, split.eval_test, num_items),
            "train_cpu_s": 0.0, "train_wall_s": 0.0, "eval_cpu_s": 0.0, "eval_wall_s": 0.0, "steps": 0, "params": 0}


# ---------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    b = res["budget"]
    lines = [f"# Peer benchmark: cornac TIGER vs semrec TIGER on {res['dataset']} (protocol P, test split)", "",
             f"Commit `{res['commit']}`; {res['machine']}; seed {res['seed']}; cornac {res['cornac_version']}; "
             f"{res['n_test_rows']} of {res['n_users']} test users scored{' (--tiny subset)' if res['tiny'] else ''}; "
             f"{b['epochs']} epoch(s) each (the recipe asks for {b['recipe_epochs']}); "
             f"total wall {res['total_wall_s']:.0f} s; load average at the start "
             f"{', '.join(f'{x:.1f}' for x in res['load_average_at_start'])}.", ""]
    if b.get("note"):
        lines += [f"Budget: {b['note']}", ""]
    if not res["complete"]:
        lines += ["**Partial: not every row was finished when this was written; the rows below are.**", ""]
    lines += ["| model | recipe / setting | R@5 | N@5 | R@10 (± s.e.) | N@10 | train CPU s | train wall s | "
              "eval CPU s | eval wall s | steps | params |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['model']} | {r['setting']} | {r['recall@5']:.4f} | {r['ndcg@5']:.4f} | "
                     f"{r['recall@10']:.4f} ± {r['recall@10_se']:.4f} | {r['ndcg@10']:.4f} | "
                     f"{r['train_cpu_s']:.0f} | {r['train_wall_s']:.0f} | "
                     f"{r['eval_cpu_s']:.0f} | {r['eval_wall_s']:.0f} | {r['steps']} | {r['params']:,} |")
    lines += ["", "CPU seconds are time.process_time of the one process (1 torch thread), wall seconds "
              "time.perf_counter; training includes any validation for model selection, evaluation is the beam "
              "search over the scored test users. s.e.: the binomial standard error of R@10. Metrics: one function "
              "(`semrec.evaluation.score_lists`) on each side's top-10 lists.", ""]
    lines += ["## Rows", ""] + [f"- `{k}`: {v}" for k, v in res["settings"].items()] + [""]
    lines += ["## Counting", ""] + [f"- {k}: {v}" for k, v in res["counting"].items()]
    if res.get("cornac_native"):
        lines += ["", "cornac's own `ranking_eval` on cornac's scores: " + ", ".join(
            f"{k} {v:.4f}" for k, v in res["cornac_native"]["metrics"].items())
            + f" (equal to the shared counting: {res['cornac_native']['equal']})."]
    lines += ["", "## Setup", ""] + [f"- {k}: {v}" for k, v in res["setup"].items()]
    lines += ["", "## What still differs between the cornac row and semrec `matched`", ""]
    lines += [f"- {d}" for d in res["remaining_differences"]]
    lines += ["", f"Produced by `{res['command']}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="--tiny-users users (a seeded sample) and 1 epoch: a smoke run")
    ap.add_argument("--tiny-users", type=int, default=300)
    ap.add_argument("--users", type=int, default=None,
                    help="run on this many users drawn uniformly (seeded), the catalogue cut to their items "
                         "(default: all users and items)")
    ap.add_argument("--test-users", type=int, default=None,
                    help="score this many test users (a seeded uniform sample, the same on both sides; default all)")
    ap.add_argument("--skip-cornac", action="store_true", help="semrec rows only (for a machine without cornac)")
    ap.add_argument("--recipe", default="grid", choices=sorted(CORNAC_RECIPES),
                    help="cornac's shipped recipe (GRID_CONFIG or PAISCHER_CONFIG) both sides follow")
    ap.add_argument("--size", default="recipe", choices=["recipe", "small"],
                    help="model size: the recipe's (cornac's defaults: 4+4 layers, d_model 128, d_ff 1024) or "
                         "semrec's small CPU TIGER (2+2 layers, d_model 128, 4 heads, d_ff 512), both sides")
    ap.add_argument("--epochs", type=int, default=None, help="both sides (default: the recipe's n_epochs)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS, help="semrec settings to run")
    ap.add_argument("--dataset", default="toys-p")
    ap.add_argument("--scheme", default=str(REPO / "tokenizers" / "rqkmeans.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    ap.add_argument("--out-name", default=None, help="results file stem (default peer_tiger, peer_tiger_tiny)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--note", default=None, help="why this budget (stored with the results)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import torch

    from semrec.data import load_builtin
    from semrec.errors import SemrecError
    from semrec.artifacts import atomic_file, write_json
    from semrec.runtime import describe_machine, git_commit

    t_start = time.perf_counter()
    try:
        for flag in ("epochs", "users", "test_users", "tiny_users"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise SemrecError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
        torch.set_num_threads(args.threads)
        cornac_version = None
        if not args.skip_cornac:
            try:
                cornac_version = check_cornac_recipes()
            except ImportError:
                raise SemrecError("cornac is not installed (pip install -e .[peers]); "
                                  "run with --skip-cornac for the semrec rows only") from None
        recipe = dict(CORNAC_RECIPES[args.recipe], **(SMALL if args.size == "small" else {}))
        epochs = 1 if args.tiny else (args.epochs or recipe["n_epochs"])
        recipe_epochs = recipe["n_epochs"]
        recipe["n_epochs"] = epochs
        if epochs == 1:  # best-on-valid over one epoch is the last epoch: no validation on either side
            recipe["model_selection"] = "last"

        ds = load_builtin(args.dataset)
        if ds.protocol != "P":
            raise SemrecError(f"{args.dataset}: this benchmark needs a protocol-P (leave-one-out) dataset")
        log(f"{ds.name}: {ds.num_items} items, {len(ds.test)} users; item vectors and codes")
        with Clock() as tok_clock:
            tok, features, emb_info = tokenization(ds, Path(args.scheme), args.progress)
        if not np.array_equal(tok.entry_of_item, np.arange(ds.num_items)):
            raise SemrecError("the tokenization merges items; this benchmark compares one code row per item")
        users = args.tiny_users if args.tiny else args.users
        split = load_split(ds, tok, features, recipe["max_len"], users=users, test_users=args.test_users,
                           seed=args.seed)
        tok, features, n_items = split.tok, split.features, len(split.items)
        raw = tok.raw_codes
        log(f"{len(split.test)} users, {n_items} items, {len(split.eval_test)} test rows scored, "
            f"{len(split.train_examples)} training examples")

        collisions = tok.stats.get("collisions", {})
        res = {
            "benchmark": "peer_tiger", "dataset": ds.name, "protocol": "P", "split": "test", "tiny": args.tiny,
            "n_test_rows": len(split.eval_test), "n_users": len(split.test), "seed": args.seed, "commit": git_commit(),
            "machine": describe_machine("cpu") + f", {platform.python_version()}", "cornac_version": cornac_version,
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "budget": {"epochs": epochs, "recipe_epochs": recipe_epochs, "recipe": CORNAC_RECIPE_NAMES[args.recipe],
                       "size": args.size, "num_beams": NUM_BEAMS, "users": len(split.test),
                       "items": n_items, "training_examples": len(split.train_examples), "note": args.note},
            "load_average_at_start": os.getloadavg(),
            "complete": False, "rows": [], "cornac_native": None,
            "counting": {
                "function": "semrec.evaluation.score_lists on each side's top-10 lists (cornac: its beam items "
                            "ordered by its scores; semrec: semrec.evaluation.generate's beam order)",
                "rows": (f"every test user ({len(split.test)})" if len(split.eval_test) == len(split.test) else
                         f"{len(split.eval_test)} of the {len(split.test)} test users, drawn uniformly with seed "
                         f"{args.seed}, the same rows on both sides")
                        + "; target = the user's last item, history = all earlier items (each model reads its "
                          "last max_len)",
                "candidates": f"the run's whole catalogue ({n_items} items) on both sides: cornac is built with "
                              "exclude_unknowns=False (every item of the sequences known), its item indices mapped "
                              "back to the run's item ids",
                "history items": "not excluded on either side (a recommended history item counts as a miss)",
                "beams": f"{NUM_BEAMS} constrained beams on both sides; a target outside them is a miss "
                         "(cornac gives non-beam items a -1e10 filler score)",
                "ties": "the 10 listed items are ordered by beam score; exact score ties are counted in "
                        "rows_with_tied_scores (their order is arbitrary there)",
                "test targets never seen in training": int((~np.isin(split.eval_test.targets,
                                                                     np.concatenate(split.train_seqs))).sum()),
            },
            "setup": {
                "users and catalogue": (f"all {len(ds.test)} users, all {n_items} items" if n_items == ds.num_items
                                        else f"{len(split.test)} of the {len(ds.test)} users, drawn uniformly with "
                                             f"seed {args.seed}; the catalogue cut to the {n_items} items of their "
                                             "sequences (codes: their rows of the full catalogue's RQ-KMeans IDs)"),
                "item vectors": f"{emb_info.get('model', 'all-MiniLM-L6-v2')} via {Path(args.scheme).name}, "
                                f"{features.shape[1]}-d, {features.shape[0]} items (cornac gets them too, unused "
                                "by its tokenizer hook)",
                "semantic IDs": f"{tok.scheme} {'x'.join(map(str, tok.codebook_sizes))}, collisions: "
                                f"{collisions.get('method')} ({collisions.get('before', {}).get('collisions')} "
                                f"before, {collisions.get('after', {}).get('collisions')} after); the same raw "
                                "codes go to cornac, which adds its collision level (size 1: a constant 4th token)",
                "tokenization seconds (wall, cached vectors reused)": round(tok_clock.wall, 1),
                "model size": {k: recipe[k] for k in ("num_enc_layers", "num_dec_layers", "d_model", "num_heads",
                                                      "d_kv", "d_ff", "dropout", "max_len")},
                "batch size": recipe["batch_size"], "epochs": epochs,
                "selection": (f"best valid ndcg@{recipe['val_k']} every {recipe['val_eval_every']} epoch(s) on "
                              f"{recipe['val_sample']} valid rows (cornac: a random sample; semrec: the first rows)"
                              if recipe["model_selection"] == "best" else
                              "the last epoch on both sides (with one epoch the recipe's best-on-valid selection "
                              "has one candidate, so neither side validates)"),
                "training examples": "every prefix of each user's training sequence (history capped at max_len), "
                                     "on both sides",
            },
            "settings": {
                args.recipe: f"cornac {cornac_version or '(not run)'} TIGER with {CORNAC_RECIPE_NAMES[args.recipe]} "
                             "(epochs and, with --size small, the model size overridden; semantic IDs given)",
                "matched": "semrec TIGER with the cornac recipe's optimizer (AdamW), learning rate and schedule, "
                           "weight decay, no gradient clipping, dropout and selection; untied output head and a "
                           "separator token after each history item, as cornac's network has",
                "semrec": "semrec TIGER with its defaults (tied embeddings, no separator) and its protocol-P CPU "
                          "training setup: AdamW lr 3e-3, warmup 100 steps (or a tenth of a shorter run), cosine "
                          "to 0, weight decay 0.01, gradient clipping at 1",
                "semrec_msl": "the `semrec` setting with MSL: each position's cross-entropy over the trie-allowed "
                              "next tokens only (cornac: over its level's codes), decoding renormalised the same way",
            },
            "remaining_differences": [
                "batches: cornac fills each batch with consecutive prefixes of shuffled users; semrec shuffles "
                "all prefixes",
                "loss: cornac sums the per-level mean cross-entropies, each over its own level's codes; semrec "
                "averages the token cross-entropies over the whole vocabulary (Adam is nearly scale-free)",
                "weight decay: cornac on every parameter, semrec on matrices only",
                "initialisation: cornac's decoder start is a separate vector (std 0.02) and its heads are "
                "nn.Linear defaults; semrec's start token is a vocabulary row and its head std d_model**-0.5",
                "valid rows for selection: cornac samples them at random, semrec takes the first ones",
            ],
            "command": "python benchmarks/peer_tiger.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        stem = args.out_name or ("peer_tiger_tiny" if args.tiny else "peer_tiger")
        out = Path(args.results_dir)
        out.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            res["total_wall_s"] = time.perf_counter() - t_start
            res["load_average_at_end"] = os.getloadavg()
            write_json(out / f"{stem}.json", res)
            with atomic_file(out / f"{stem}.md") as f:
                f.write(markdown(res))

        rows = res["rows"]
        res["settings"] = {"reference": "MostPop: the split's most frequent training targets, the same list for "
                                        "every row", **res["settings"]}
        rows.append(mostpop_row(split, n_items))
        if not args.skip_cornac:
            ev = cornac_eval_method(split, features, args.seed)
            cornac_items = item_order(ev)
            if not np.array_equal(np.sort(cornac_items), np.arange(n_items)):
                raise SemrecError(f"cornac knows {len(cornac_items)} items, the catalogue has {n_items}")
            model = cornac_model(dict(recipe, n_beams=NUM_BEAMS), raw[cornac_items], max(tok.codebook_sizes),
                                 args.seed)
            log(f"cornac {CORNAC_RECIPE_NAMES[args.recipe]}: training, {epochs} epoch(s)")
            with Clock() as fit:
                model.fit(ev.train_set, ev.val_set)
            log(f"cornac: trained in {fit.wall:.0f} s wall; decoding {len(split.eval_test)} test rows")
            with Clock() as dec:
                top, top_scores, scores = cornac_top_lists(model, ev, split.eval_test, args.progress)
            n_train = sum(len(s) - 1 for s in split.train_seqs)
            row = {"model": f"cornac TIGER ({CORNAC_RECIPE_NAMES[args.recipe]})", "setting": args.recipe,
                   **count(top, top_scores, split.eval_test, n_items),
                   "train_cpu_s": fit.cpu, "train_wall_s": fit.wall, "eval_cpu_s": dec.cpu, "eval_wall_s": dec.wall,
                   "steps": epochs * -(-n_train // recipe["batch_size"]),
                   "params": sum(p.numel() for p in model.model.parameters()),
                   "collision_level_size": int(model.level_sizes[-1]),
                   "cornac_config": {k: recipe[k] for k in recipe if k != "n_beams"}}
            rows.append(row)
            log(f"cornac: R@10 {row['recall@10']:.4f} N@10 {row['ndcg@10']:.4f}; replaying cornac's ranking_eval")
            nat = cornac_native_metrics(ev, split.eval_test, scores)
            equal = all(abs(nat[k] - row[k]) < 1e-9 for k in nat)
            res["cornac_native"] = {"metrics": nat, "equal": equal}
            if not equal:
                log(f"WARNING: cornac's ranking_eval counts differently: {nat}")
            del scores
            save()
        for setting in args.settings:
            r = run_semrec(setting, tok, split, recipe, args.seed, epochs, args.progress)
            row = {"model": "semrec TIGER", "setting": setting,
                   **count(r.pop("items"), r.pop("scores"), split.eval_test, n_items), **r}
            rows.append(row)
            log(f"semrec {setting}: R@10 {row['recall@10']:.4f} N@10 {row['ndcg@10']:.4f}")
            save()
        res["complete"] = True
        save()
        log(f"wrote {out / stem}.json and .md")
        print(markdown(res))

    except SemrecError as exc:
        print(f"peer_tiger: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
